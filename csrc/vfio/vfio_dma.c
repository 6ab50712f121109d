/* Memory for device DMA: whole pages, so the IOMMU can map them without exposing
 * neighbouring heap data to the device. */
#include "vfio_impl.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

size_t vfio_page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

void *vfio_dma_alloc(size_t size, size_t *rounded)
{
    size_t pg = vfio_page_size();
    if (size == 0 || size > SIZE_MAX - pg) {
        errno = EINVAL;
        return NULL;
    }
    size_t r = (size + pg - 1) & ~(pg - 1);
    void *p = mmap(NULL, r, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    *rounded = r;
    return p;
}

void vfio_dma_free(void *p, size_t rounded)
{
    if (p)
        munmap(p, rounded);
}
