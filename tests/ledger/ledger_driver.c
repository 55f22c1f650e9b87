/* ledger_driver.c: a process that appends ledger records in a loop, for the end-to-end
 * tests (tests/e2e/ledger_*.sh) that kill it, stop its database and run two at once.
 *
 *   ledger_driver --spool DIR (--sqlite PATH | --postgres URL) --prefix P
 *                 [--count N] [--start I] [--rate R] [--progress FILE]
 *                 [--flush-ms MS] [--batch N] [--close-ms MS]
 *     appends records "P-I", "P-(I+1)"... (N of them; 0 = until SIGTERM / SIGINT) at R per
 *     second (0 = as fast as it can), writing the number appended so far into FILE after
 *     each one (20 digits, rewritten in place: after a kill -9 the file says how many
 *     appends had returned, give or take the one in flight). On SIGTERM, or after N, it
 *     closes the ledger (delivering what is pending within --close-ms) and exits 0.
 *   ledger_driver --spool DIR (--sqlite PATH | --postgres URL) --drain [--close-ms MS]
 *     starts, lets the ledger adopt what dead processes left in DIR, waits (up to
 *     --close-ms) until only its own files remain, closes and exits: 0 when drained.
 *   ledger_driver (--sqlite PATH | --postgres URL) --verify P
 *     prints "count=N distinct=N min=A max=B attempts=M" for the records "P-*".
 *   ledger_driver --spooled DIR
 *     prints the number of whole records in DIR's segments (frames in *.seg, lines in
 *     *.spool), delivered or not.
 *
 * Record P-I has key id P, route "chat", one attempt (two, a fallback, for odd I), usage
 * {100, 10, 0, 50} and cost 42 micro-dollars. Build: see tests/e2e/ledger_sqlite.sh. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "gateway/ledger.h"
#include "gateway/ledger_db.h"
#include "gateway/ledger_frame.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int do_spooled(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) { printf("0\n"); return 0; }
    long long n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        int frames = l > 4 && !strcmp(e->d_name + l - 4, ".seg"), lines = l > 6 && !strcmp(e->d_name + l - 6, ".spool");
        if (!frames && !lines) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        static char buf[64 << 20];
        size_t len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        if (lines) {
            for (size_t i = 0; i < len; i++) n += buf[i] == '\n';
            continue;
        }
        ledger_record r;
        ledger_attempt atts[LEDGER_MAX_ATTEMPTS];
        for (size_t pos = 0, used; pos < len;) {
            int rc = ledger_frame_decode(buf + pos, len - pos, &r, atts, &used);
            if (rc == 0) break;
            if (rc > 0) { n++; pos += used; }
            else pos += ledger_frame_resync(buf + pos, len - pos);
        }
    }
    closedir(d);
    printf("%lld\n", n);
    return 0;
}

static int files_other_than_one_owner(const char *dir) {
    /* spool files: at most one .lock and one segment (ours) once drained */
    DIR *d = opendir(dir);
    if (!d) return -1;
    int locks = 0, spools = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 5 && !strcmp(e->d_name + l - 5, ".lock")) locks++;
        if ((l > 6 && !strcmp(e->d_name + l - 6, ".spool")) || (l > 4 && !strcmp(e->d_name + l - 4, ".seg"))) spools++;
    }
    closedir(d);
    return (locks > 1 ? locks - 1 : 0) + (spools > 1 ? spools - 1 : 0);
}

typedef struct verify {
    char out[256];
} verify;

static int on_verify(void *arg, int ncols, const char *const *cols) {
    verify *v = arg;
    if (ncols < 5) return 1;
    snprintf(v->out, sizeof v->out, "count=%s distinct=%s min=%s max=%s attempts=%s", cols[0] ? cols[0] : "0",
             cols[1] ? cols[1] : "0", cols[2] ? cols[2] : "-1", cols[3] ? cols[3] : "-1", cols[4] ? cols[4] : "0");
    return 0;
}

static int do_verify(gw_ledger_kind kind, const char *target, const char *prefix) {
    sg_error err;
    ledger_db *db = ledger_db_open(kind, target, true, &err);
    if (!db) { fprintf(stderr, "ledger_driver: %s\n", err.msg); return 1; }
    char like[200], start[24];
    snprintf(like, sizeof like, "%s-%%", prefix);
    snprintf(start, sizeof start, "%zu", strlen(prefix) + 2);
    verify v = {"count=0"};
    int rc = ledger_db_select(db,
                              "SELECT COUNT(*), COUNT(DISTINCT request_id), MIN(CAST(SUBSTR(request_id, CAST(? AS INTEGER)) AS BIGINT)), "
                              "MAX(CAST(SUBSTR(request_id, CAST(? AS INTEGER)) AS BIGINT)), "
                              "(SELECT COUNT(*) FROM attempts WHERE request_id LIKE ?) FROM requests WHERE request_id LIKE ?",
                              (const char *const[]){start, start, like, like}, 4, on_verify, &v, &err);
    ledger_db_close(db);
    if (rc) { fprintf(stderr, "ledger_driver: %s\n", err.msg); return 1; }
    printf("%s\n", v.out);
    return 0;
}

int main(int argc, char **argv) {
    sg_log_init_from_env();
    ledger_opts o;
    ledger_opts_defaults(&o);
    const char *prefix = NULL, *progress = NULL, *verify_prefix = NULL;
    long long count = 0, start = 0;
    double rate = 0;
    unsigned close_ms = 30000;
    int drain = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--drain")) { drain = 1; continue; }
        if (!strcmp(a, "--spooled") && v) return do_spooled(v);
        if (!v) { fprintf(stderr, "ledger_driver: %s needs a value\n", a); return 2; }
        i++;
        if (!strcmp(a, "--spool")) o.spool_dir = v;
        else if (!strcmp(a, "--sqlite")) { o.kind = GW_LEDGER_SQLITE; o.sqlite_path = v; }
        else if (!strcmp(a, "--postgres")) { o.kind = GW_LEDGER_POSTGRES; o.postgres_url = v; }
        else if (!strcmp(a, "--prefix")) prefix = v;
        else if (!strcmp(a, "--count")) count = atoll(v);
        else if (!strcmp(a, "--start")) start = atoll(v);
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--progress")) progress = v;
        else if (!strcmp(a, "--flush-ms")) o.flush_ms = (uint32_t)atoi(v);
        else if (!strcmp(a, "--batch")) o.batch_max = (uint32_t)atoi(v);
        else if (!strcmp(a, "--close-ms")) close_ms = (unsigned)atoi(v);
        else if (!strcmp(a, "--verify")) verify_prefix = v;
        else { fprintf(stderr, "ledger_driver: unknown option %s\n", a); return 2; }
    }
    o.retry_max_ms = 1000;   /* tests restart databases: come back quickly */
    if (verify_prefix)
        return do_verify(o.kind, o.kind == GW_LEDGER_POSTGRES ? o.postgres_url : o.sqlite_path, verify_prefix);
    if (!prefix && !drain) { fprintf(stderr, "ledger_driver: --prefix or --drain\n"); return 2; }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    sg_error err;
    ledger *l = ledger_open(&o, &err);
    if (!l) { fprintf(stderr, "ledger_driver: %s\n", err.msg); return 1; }
    if (drain) {
        int64_t deadline = mono_ns() + (int64_t)close_ms * 1000000;
        int left;
        while ((left = files_other_than_one_owner(o.spool_dir)) > 0 && mono_ns() < deadline && !g_stop) usleep(20000);
        ledger_close(l, close_ms);
        fprintf(stderr, "ledger_driver: drain: %s\n", left ? "files left" : "done");
        return left ? 1 : 0;
    }
    int pfd = progress ? open(progress, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
    char pbuf[32];
    snprintf(pbuf, sizeof pbuf, "%020d\n", 0);
    if (pfd >= 0 && pwrite(pfd, pbuf, 21, 0) != 21) return 1;
    int64_t t0 = mono_ns(), period = rate > 0 ? (int64_t)(1e9 / rate) : 0;
    long long n = 0;
    int rc = 0;
    char id[128];
    ledger_attempt att[2] = {{"openai", "gpt-4o-mini", 503, "retryable", 25, 0, 0, 10, 20, -1, -1, 0}, {"anthropic", "claude-haiku-4-5", 200, NULL, 300, 25, 0, 0, 150, 120, 40, 90}};
    while (!g_stop && (count == 0 || n < count)) {
        if (period) {
            int64_t due = t0 + n * period;
            int64_t now = mono_ns();
            if (due > now) {
                struct timespec ts = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
                if (g_stop) break;
            }
        }
        long long i = start + n;
        snprintf(id, sizeof id, "%s-%lld", prefix, i);
        ledger_record r = {
            .time_ms = 0, .request_id = id, .key_id = prefix, .route = "chat", .requested_model = "chat",
            .provider = i % 2 ? "anthropic" : "openai", .model = i % 2 ? "claude-haiku-4-5" : "gpt-4o-mini",
            .attempts = i % 2 ? att : att + 1, .n_attempts = i % 2 ? 2 : 1,
            .usage = {100, 10, 0, 50, -1, false}, .cost_micro = 42, .latency_ms = 350, .ttft_ms = 120,
            .status = 200, .stream = true,
        };
        if (i % 2 == 0) { att[1].provider = "openai"; att[1].model = "gpt-4o-mini"; }
        else { att[1].provider = "anthropic"; att[1].model = "claude-haiku-4-5"; }
        if (ledger_append(l, &r, &err)) { fprintf(stderr, "ledger_driver: %s\n", err.msg); rc = 1; break; }
        n++;
        if (pfd >= 0) {
            snprintf(pbuf, sizeof pbuf, "%020lld\n", n);
            if (pwrite(pfd, pbuf, 21, 0) != 21) { rc = 1; break; }
        }
    }
    ledger_close(l, close_ms);
    if (pfd >= 0) close(pfd);
    fprintf(stderr, "ledger_driver: %lld appended\n", n);
    return rc;
}
