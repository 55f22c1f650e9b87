/* hub_progress.h: what a pull shows while a file downloads. On a terminal, one line
 * redrawn with \r at most 10 times a second (bytes, percent, rate, ETA); elsewhere (a log,
 * a pipe) plain lines: one when a file starts, one per 10% and one when it ends, so a log
 * stays short and readable. Not thread-safe: one per download. */
#ifndef SG_HUB_PROGRESS_H
#define SG_HUB_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct hub_progress {
    FILE *out;            /* NULL: silent */
    int tty;
    char label[128];
    int64_t total;        /* bytes, -1 unknown */
    int64_t done;         /* bytes present, resumed ones included */
    int64_t resumed;      /* bytes that were already there at the start */
    double t0, last_draw; /* seconds, monotonic */
    int last_decile;
} hub_progress;

/* Starts a file: total may be -1; resumed bytes count as done but not towards the rate. */
void hub_progress_begin(hub_progress *p, FILE *out, int tty, const char *label, int64_t total,
                        int64_t resumed);
/* The download restarted from byte 0 (the server ignored the Range request). */
void hub_progress_restart(hub_progress *p);
void hub_progress_add(hub_progress *p, size_t n);
/* Ends the file's line: ok 1 "done", 0 leaves the message to the caller. */
void hub_progress_end(hub_progress *p, int ok);

/* "1.5 GB", "12.0 MB", "512 B" (decimal units, as the hub shows sizes). */
void hub_format_bytes(double bytes, char *out, size_t n);

#endif
