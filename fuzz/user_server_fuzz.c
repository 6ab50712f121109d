/* libFuzzer target: what a vfio-user client can send to a server (fuzz/user_fuzz.h says
 * what an input does and which invariants hold): requests in the receiver's role, the
 * replies to its DMA requests. */
#include "user_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fz_run(data, size, USER_ROLE_SERVER);
}
