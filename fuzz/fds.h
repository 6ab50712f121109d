/* The vfio-user fuzz targets' fd count (user_fuzz.h, user_backend_fuzz.c): how many fds
 * the process holds, for their invariant that an input leaves the same fds open. */
#pragma once
#include <dirent.h>
#include <stdlib.h>

static int fz_open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        abort();
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}
