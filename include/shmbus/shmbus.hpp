// Umbrella header: everything a shmbus user needs.
#pragma once

#include "shmbus/bus.hpp"
#include "shmbus/error.hpp"
#include "shmbus/listener.hpp"
#include "shmbus/options.hpp"
#include "shmbus/partition.hpp"
#include "shmbus/properties.hpp"
#include "shmbus/publisher.hpp"
#include "shmbus/report.hpp"
#include "shmbus/selector.hpp"
#include "shmbus/subscriber.hpp"
#include "shmbus/topic.hpp"
#include "shmbus/topic_status.hpp"
