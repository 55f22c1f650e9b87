/* mapfile.h: read-only memory-mapped files, the way model weights are loaded (the page
 * cache holds them once, however many processes map them). */
#ifndef SG_MAPFILE_H
#define SG_MAPFILE_H

#include <stddef.h>
#include "common/error.h"

typedef struct sg_mapfile {
    const unsigned char *data;   /* NULL for an empty file */
    size_t size;                 /* bytes */
} sg_mapfile;

int  sg_mapfile_open(sg_mapfile *m, const char *path, sg_error *err);
void sg_mapfile_close(sg_mapfile *m);
/* Reads a whole (small) file into a NUL-terminated heap buffer. */
char *sg_read_file(const char *path, size_t *len_out, sg_error *err);

#endif
