// What a Topic made by a Bus needs from the Bus's daemon connection
// (src/bus.cpp): registering the seats it hands out, so that shmbusd frees
// them if this process dies (and the connection registers them again after
// it reconnects).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace shmbus::detail {

class Connection;

void register_producer(Connection& c, const std::string& topic, std::uint32_t seat);
void register_member(Connection& c, const std::string& topic, std::uint32_t group,
                     std::uint32_t member);

// src/request.cpp: a Bus's (empty) share of its requester state.
struct RequesterSlot;
std::shared_ptr<RequesterSlot> make_requester_slot();

}  // namespace shmbus::detail
