/* mapfile.c: see mapfile.h. */
#include "common/mapfile.h"
#include "common/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int sg_mapfile_open(sg_mapfile *m, const char *path, sg_error *err) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sg_fail(err, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return sg_fail(err, "cannot stat %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sg_fail(err, "%s is not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return sg_fail(err, "cannot map %s: %s", path, strerror(errno));
        }
        m->data = p;
        m->size = (size_t)st.st_size;
    }
    close(fd);
    return 0;
}

void sg_mapfile_close(sg_mapfile *m) {
    if (m->data) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

char *sg_read_file(const char *path, size_t *len_out, sg_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) { sg_fail(err, "cannot open %s: %s", path, strerror(errno)); return NULL; }
    sg_buf b;
    sg_buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) sg_buf_append(&b, chunk, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) { sg_buf_free(&b); sg_fail(err, "cannot read %s", path); return NULL; }
    if (len_out) *len_out = b.len;
    return sg_buf_steal(&b);
}
