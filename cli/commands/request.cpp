// shmbus request: one request-reply round trip (Bus::request): publishes the
// payload with reply_to and correlation_id, prints the reply.
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "commands.hpp"

namespace shmbus::cli {
namespace {

struct RequestArgs {
  std::string topic, payload;
  double timeout = 5;
};

int cmd_request(const Globals& g, const RequestArgs& a) {
  Bus bus = connect(g);
  std::vector<std::byte> reply;
  try {
    reply = bus.request(a.topic, std::as_bytes(std::span(a.payload.data(), a.payload.size())),
                        seconds_to_ns(a.timeout));
  } catch (const Error& e) {
    if (e.code() != ErrorCode::Timeout) throw;
    fail(kExitTimeout, strf("no reply from topic '%s' within %gs: is a responder subscribed? "
                            "(see shmbus topic describe %s), or raise --timeout",
                            a.topic.c_str(), a.timeout, a.topic.c_str()));
  }
  if (!reply.empty() && std::fwrite(reply.data(), 1, reply.size(), stdout) != reply.size())
    fail(kExitError, "cannot write the reply to stdout");
  std::fputc('\n', stdout);
  return kExitOk;
}

}  // namespace

void add_request_command(CommandTree& tree) {
  const Globals& g = tree.globals();
  auto ra = std::make_shared<RequestArgs>();
  CLI::App* req = tree.leaf(
      &tree.app(), "request",
      "send PAYLOAD to TOPIC as a request and print the reply (one line): a responder answers "
      "with Sample::reply / sample.reply; exit 2 when none comes in time",
      [&g, ra] { return cmd_request(g, *ra); });
  req->add_option("TOPIC", ra->topic, "the topic responders subscribe to")->required();
  req->add_option("PAYLOAD", ra->payload, "the request's payload")->required();
  req->add_option("--timeout", ra->timeout, "seconds to wait for the reply (default: 5)")
      ->check(number_above(0, false));
}

}  // namespace shmbus::cli
