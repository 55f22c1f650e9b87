/* hub_progress.c: download progress on a terminal or in a log (hub_progress.h). */
#include "hub/hub_progress.h"

#include <string.h>
#include <time.h>

#define REDRAW_S   0.1
#define DECILE_MIN (8 << 20)   /* bytes: files this big get a line per 10% in a log */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void hub_format_bytes(double b, char *out, size_t n) {
    static const char *units[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000 && u < 4) { b /= 1000; u++; }
    if (u == 0) snprintf(out, n, "%.0f B", b);
    else snprintf(out, n, "%.1f %s", b, units[u]);
}

static double rate_of(const hub_progress *p, double t) {
    double dt = t - p->t0;
    return dt > 0 ? (double)(p->done - p->resumed) / dt : 0;
}

static void draw_bar(hub_progress *p, double t) {
    char have[32], total[32], rate[32], eta[32] = "";
    double r = rate_of(p, t);
    hub_format_bytes((double)p->done, have, sizeof have);
    hub_format_bytes(r, rate, sizeof rate);
    if (p->total > 0) {
        hub_format_bytes((double)p->total, total, sizeof total);
        if (r > 0) {
            long s = (long)((double)(p->total - p->done) / r);
            snprintf(eta, sizeof eta, " ETA %ld:%02ld", s / 60, s % 60);
        }
        fprintf(p->out, "\r%-40.40s %9s / %-9s %3d%% %9s/s%s\033[K", p->label, have, total,
                (int)(100 * p->done / p->total), rate, eta);
    } else {
        fprintf(p->out, "\r%-40.40s %9s %9s/s\033[K", p->label, have, rate);
    }
    fflush(p->out);
}

void hub_progress_begin(hub_progress *p, FILE *out, int tty, const char *label, int64_t total,
                        int64_t resumed) {
    memset(p, 0, sizeof *p);
    p->out = out;
    p->tty = tty;
    snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total;
    p->done = p->resumed = resumed;
    p->t0 = p->last_draw = now_s();
    p->last_decile = total > 0 ? (int)(10 * resumed / total) : 0;
    if (!out) return;
    if (tty) { draw_bar(p, p->t0); return; }
    char t[32], r[32];
    hub_format_bytes((double)total, t, sizeof t);
    hub_format_bytes((double)resumed, r, sizeof r);
    if (resumed > 0) fprintf(out, "pulling %s (%s, resuming at %s)\n", label, total >= 0 ? t : "size unknown", r);
    else fprintf(out, "pulling %s (%s)\n", label, total >= 0 ? t : "size unknown");
    fflush(out);
}

void hub_progress_restart(hub_progress *p) {
    p->done = p->resumed = 0;
    p->last_decile = 0;
    p->t0 = now_s();
}

void hub_progress_add(hub_progress *p, size_t n) {
    p->done += (int64_t)n;
    if (!p->out) return;
    if (p->tty) {
        double t = now_s();
        if (t - p->last_draw >= REDRAW_S) { p->last_draw = t; draw_bar(p, t); }
        return;
    }
    if (p->total < DECILE_MIN) return;   /* small files: the start and end lines say enough */
    int d = (int)(10 * p->done / p->total);
    if (d > p->last_decile && d < 10) {
        p->last_decile = d;
        char have[32], rate[32];
        hub_format_bytes((double)p->done, have, sizeof have);
        hub_format_bytes(rate_of(p, now_s()), rate, sizeof rate);
        fprintf(p->out, "  %s: %d%% (%s, %s/s)\n", p->label, d * 10, have, rate);
        fflush(p->out);
    }
}

void hub_progress_end(hub_progress *p, int ok) {
    if (!p->out) return;
    double t = now_s();
    if (p->tty) {
        draw_bar(p, t);
        fputc('\n', p->out);
    }
    if (ok && !p->tty) {
        char have[32], rate[32];
        hub_format_bytes((double)p->done, have, sizeof have);
        hub_format_bytes(rate_of(p, t), rate, sizeof rate);
        fprintf(p->out, "  %s: done, %s in %.1f s (%s/s)\n", p->label, have, t - p->t0, rate);
    }
    fflush(p->out);
}
