/* libFuzzer target: what a vfio-user server can send to a client (fuzz/user_fuzz.h says
 * what an input does and which invariants hold): replies, version JSON among them, and
 * DMA_READ/WRITE requests. */
#include "user_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fz_run(data, size, USER_ROLE_CLIENT);
}
