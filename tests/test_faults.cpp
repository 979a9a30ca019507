#include "daemon_util.hpp"
