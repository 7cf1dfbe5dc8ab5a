// The emulator's stand-in for c10/cuda/CUDAException.h: its macros are in emu.h.
#pragma once

#include "../../../emu.h"
