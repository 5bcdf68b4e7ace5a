// Shared by every kernel of daam_fast._C: the argument-check macro (throws ValueError in Python).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#define DAAM_CHECK(cond, msg)                                                        \
  do {                                                                               \
    if (!(cond)) throw std::invalid_argument(std::string("daam_fast._C: ") + (msg)); \
  } while (0)
