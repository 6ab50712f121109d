/* The guest programs' reading of /proc/interrupts: the counts of the rows a predicate
 * picks, summed over every CPU column (the numbers after the row's "NAME:"). */
#ifndef LUAVFIO_GUEST_PROCIRQ_H
#define LUAVFIO_GUEST_PROCIRQ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long procirq_sum(int (*want)(const char *line))
{
    FILE *f = fopen("/proc/interrupts", "r");
    if (!f)
        return -1;
    char line[1024];
    long total = 0;
    while (fgets(line, sizeof line, f)) {
        char *p = strchr(line, ':');
        if (!p || !want(line))
            continue;
        for (p++;;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            total += v;
            p = end;
        }
    }
    fclose(f);
    return total;
}

#endif
