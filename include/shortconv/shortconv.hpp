// Umbrella header for the shortconv C++ API.
#pragma once

#include "shortconv/device.hpp"
#include "shortconv/dtype.hpp"
#include "shortconv/error.hpp"
#include "shortconv/ops.hpp"
#include "shortconv/stream.hpp"
#include "shortconv/tensor.hpp"
#include "shortconv/version.hpp"
