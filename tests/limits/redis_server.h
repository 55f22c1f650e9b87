/* redis_server.h: a throwaway redis-server for tests and benchmarks (tests/test_limits_redis.c,
 * bench/bench_limits.c), header-only so both can use it without a library.
 *
 * rs_start() runs the Debian `redis-server` on a free loopback port with no persistence
 * (--save "" --appendonly no) in a scratch folder, and waits (at most 5 s) until it answers
 * PING. The server dies with its parent (PR_SET_PDEATHSIG), so a crashed test leaves
 * nothing behind; rs_stop() stops it (SIGTERM, then SIGKILL after 3 s) and removes the
 * folder. rs_pause()/rs_resume() freeze it (SIGSTOP/SIGCONT: a server that accepts but
 * never answers); rs_restart() starts a new, empty one on the same port. */
#ifndef SG_TESTS_LIMITS_REDIS_SERVER_H
#define SG_TESTS_LIMITS_REDIS_SERVER_H

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct redis_server {
    pid_t pid;
    int port;
    char dir[128];
    char url[64];                 /* redis://127.0.0.1:PORT */
    char why[512];                /* the last failure */
} redis_server;

static inline int64_t rs_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int rs_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* A synchronous connection for checks (NULL if it cannot connect within 200 ms). */
static inline redisContext *rs_connect(const redis_server *s) {
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    if (!c) return NULL;
    if (c->err) { redisFree(c); return NULL; }
    redisSetTimeout(c, (struct timeval){2, 0});
    return c;
}

static inline bool rs_ping(const redis_server *s) {
    redisContext *c = rs_connect(s);
    if (!c) return false;
    redisReply *r = redisCommand(c, "PING");
    bool ok = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
    if (r) freeReplyObject(r);
    redisFree(c);
    return ok;
}

static inline int rs_spawn(redis_server *s) {
    char port[16], log[200];
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(log, sizeof log, "%s/redis.log", s->dir);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) { snprintf(s->why, sizeof s->why, "fork: %s", strerror(errno)); return -1; }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", s->dir, "--logfile", log, "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    int64_t until = rs_mono_ms() + 5000;
    while (rs_mono_ms() < until) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            snprintf(s->why, sizeof s->why, "redis-server exited at start (status %d): is it installed "
                     "(tools/install-deps.sh --test)? see %s", st, log);
            return -1;
        }
        if (rs_ping(s)) return 0;
        usleep(20000);
    }
    snprintf(s->why, sizeof s->why, "redis-server did not answer within 5 s (see %s)", log);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    s->pid = 0;
    return -1;
}

static inline int rs_start(redis_server *s) {
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/smolgate-redis-XXXXXX");
    if (!mkdtemp(s->dir)) { snprintf(s->why, sizeof s->why, "mkdtemp: %s", strerror(errno)); return -1; }
    s->port = rs_free_port();
    if (s->port <= 0) { snprintf(s->why, sizeof s->why, "no free port"); return -1; }
    snprintf(s->url, sizeof s->url, "redis://127.0.0.1:%d", s->port);
    return rs_spawn(s);
}

/* Stops the server (bounded: SIGTERM, 3 s, SIGKILL); the folder stays for rs_restart. */
static inline void rs_kill(redis_server *s) {
    if (s->pid <= 0) return;
    kill(s->pid, SIGCONT);
    kill(s->pid, SIGTERM);
    int64_t until = rs_mono_ms() + 3000;
    while (rs_mono_ms() < until) {
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) { s->pid = 0; return; }
        usleep(10000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

static inline int rs_restart(redis_server *s) {
    rs_kill(s);
    return rs_spawn(s);
}

static inline void rs_pause(redis_server *s) { if (s->pid > 0) kill(s->pid, SIGSTOP); }
static inline void rs_resume(redis_server *s) { if (s->pid > 0) kill(s->pid, SIGCONT); }

static inline void rs_stop(redis_server *s) {
    rs_kill(s);
    if (s->dir[0]) {
        char path[256];
        snprintf(path, sizeof path, "%s/redis.log", s->dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/dump.rdb", s->dir);
        unlink(path);
        rmdir(s->dir);
        s->dir[0] = 0;
    }
}

/* One command on a fresh synchronous connection: its integer (or the number in a bulk
 * string); -1 on anything else. */
static inline long long rs_int(const redis_server *s, const char *fmt, const char *arg) {
    redisContext *c = rs_connect(s);
    if (!c) return -1;
    redisReply *r = arg ? redisCommand(c, fmt, arg) : redisCommand(c, fmt);
    long long v = -1;
    if (r && r->type == REDIS_REPLY_INTEGER) v = r->integer;
    else if (r && r->type == REDIS_REPLY_STRING) v = atoll(r->str);
    else if (r && r->type == REDIS_REPLY_NIL) v = 0;
    if (r) freeReplyObject(r);
    redisFree(c);
    return v;
}

#endif
