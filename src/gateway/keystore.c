/* keystore.c: gateway keys made at run time (keystore.h): the admin bodies, the SQL on
 * table gateway_keys, the worker thread that runs calls and polls, and the served set (an
 * open-addressing table by SHA-256, loop thread only). */
#include "gateway/keystore.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"

/* A served run-time key. gw_key first: a const gw_key * is a ks_key *. */
typedef struct ks_key {
    gw_key k;
    int refs;                  /* the set's one, plus each request holding it */
    int64_t expires_at;        /* unix seconds; 0: never */
    char *spec;                /* the row's spec, and the configuration it was built */
    const gw_config *cfg;      /* against: an unchanged key is kept by a rebuild */
} ks_key;

typedef enum { OP_CREATE, OP_GET, OP_LIST, OP_PATCH, OP_REVOKE } ks_op;

typedef struct ks_job {
    struct ks_job *next;
    ks_op op;
    char *id, *sha_hex;
    json_t *spec;              /* create: the fields; patch: what changes */
    char *secret;              /* create: added to the answer, never stored */
    keystore_done_fn done;
    void *arg;
    int status;
    char *body;
} ks_job;

struct keystore {
    loop *loop;
    /* loop thread */
    ks_key **keys;
    size_t n;
    ks_key **table;            /* open addressing, cap a power of two (0: empty) */
    size_t cap;
    json_t *rows;              /* the last rows read, rebuilt against each configuration */
    const gw_config *cfg;
    /* shared with the worker */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    bool running, stop;
    ks_job *head, *tail;
    size_t queued;
    gw_ledger_kind kind;
    char *target;
    unsigned gen;
};

#define KS_RETRY_MS 2000

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- bodies ---------------------------------------------------------------------------- */

static bool valid_id(const char *s) {   /* as the configuration's key ids */
    size_t n = strlen(s);
    if (!n || n > 64 || !isalnum((unsigned char)s[0])) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-') return false;
    return true;
}

static const gw_route *route_named(const gw_config *c, const char *name) {
    for (size_t i = 0; c && i < c->n_routes; i++)
        if (!strcmp(c->routes[i].name, name)) return &c->routes[i];
    return NULL;
}

/* An object of optional non-negative integers (or null: no limit) among names. */
static int int_fields(json_t *v, const char *what, const char *const *names, int64_t max, json_t **out, sg_error *err) {
    if (!json_is_object(v)) return sg_fail(err, "\"%s\" must be an object", what);
    json_t *o = json_object();
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        bool known = false;
        for (const char *const *n = names; *n; n++) known |= !strcmp(*n, k);
        if (!known) { json_decref(o); return sg_fail(err, "unknown field \"%s.%.64s\"", what, k); }
        if (json_is_null(x)) { json_object_set_new(o, k, json_null()); continue; }
        bool num = json_is_integer(x) || (json_is_real(x) && max < 0);
        double d = json_number_value(x);
        if (!num || d < 0 || (max > 0 && d > (double)max) || (max < 0 && d > 1e9)) {
            json_decref(o);
            return sg_fail(err, "\"%s.%s\" must be %s (or null for none)", what, k,
                           max < 0 ? "a number of dollars from 0 to 1e9" : "a non-negative integer");
        }
        json_object_set_new(o, k, max < 0 ? json_real(d) : json_integer(json_integer_value(x)));
    }
    *out = o;
    return 0;
}

int keystore_parse_body(const char *body, size_t len, const gw_config *c, bool create, json_t **spec, char **id,
                        sg_error *err) {
    *spec = NULL;
    if (id) *id = NULL;
    json_error_t je;
    json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return sg_fail(err, "the body is not valid JSON: %s", je.text);
    if (!json_is_object(root)) { json_decref(root); return sg_fail(err, "the body must be a JSON object"); }
    json_t *s = json_object();
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(root, k, v) {
        if (!strcmp(k, "id")) {
            if (!create) { rc = sg_fail(err, "\"id\" cannot change (create another key)"); break; }
            if (!json_is_string(v) || !valid_id(json_string_value(v))) {
                rc = sg_fail(err, "\"id\" must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit");
                break;
            }
            *id = sg_xstrdup(json_string_value(v));
        } else if (!strcmp(k, "role")) {
            const char *r = json_string_value(v);
            if (!r || (strcmp(r, "user") && strcmp(r, "admin") && strcmp(r, "metrics"))) {
                rc = sg_fail(err, "\"role\" must be \"user\", \"admin\" or \"metrics\"");
                break;
            }
            json_object_set(s, k, v);
        } else if (!strcmp(k, "routes")) {
            if (json_is_null(v)) { json_object_set_new(s, k, json_null()); continue; }
            if (!json_is_array(v) || json_array_size(v) > 256) {
                rc = sg_fail(err, "\"routes\" must be an array of route names (at most 256), or null for all");
                break;
            }
            size_t i;
            json_t *r;
            json_array_foreach(v, i, r) {
                if (!json_is_string(r)) { rc = sg_fail(err, "\"routes[%zu]\" must be a string", i); break; }
                if (!route_named(c, json_string_value(r))) {
                    rc = sg_fail(err, "\"routes[%zu]\": unknown route \"%.100s\"", i, json_string_value(r));
                    break;
                }
            }
            if (rc) break;
            json_object_set(s, k, v);
        } else if (!strcmp(k, "limits")) {
            static const char *const names[] = {"rpm", "tpm", "concurrency", NULL};
            json_t *o;
            if ((rc = int_fields(v, "limits", names, INT64_C(1) << 40, &o, err))) break;
            json_object_set_new(s, k, o);
        } else if (!strcmp(k, "budget")) {
            static const char *const names[] = {"daily_usd", "monthly_usd", "total_usd", NULL};
            json_t *o;
            if ((rc = int_fields(v, "budget", names, -1, &o, err))) break;
            json_object_set_new(s, k, o);
        } else if (!strcmp(k, "alert_percent")) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 100) {
                rc = sg_fail(err, "\"alert_percent\" must be an integer from 1 to 100");
                break;
            }
            json_object_set(s, k, v);
        } else if (!strcmp(k, "expires_at")) {
            if (!json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) < 0 ||
                                     json_integer_value(v) > INT64_C(253402300799))) {
                rc = sg_fail(err, "\"expires_at\" must be unix seconds, or null for never");
                break;
            }
            json_object_set(s, k, v);
        } else if (!strcmp(k, "description")) {
            if (!json_is_null(v) && (!json_is_string(v) || json_string_length(v) > 256)) {
                rc = sg_fail(err, "\"description\" must be a string of at most 256 bytes");
                break;
            }
            json_object_set(s, k, v);
        } else {
            rc = sg_fail(err, "unknown field \"%.64s\" (id, role, routes, limits, budget, alert_percent, "
                              "expires_at, description)", k);
            break;
        }
    }
    json_decref(root);
    if (!rc && create && id && !*id) rc = sg_fail(err, "missing \"id\"");
    if (rc) {
        json_decref(s);
        if (id) { free(*id); *id = NULL; }
        return -1;
    }
    *spec = s;
    return 0;
}

int keystore_new_secret(char secret[KEYSTORE_SECRET_LEN + 1], char sha_hex[2 * GW_SHA256_LEN + 1]) {
    unsigned char r[24];
    if (RAND_bytes(r, sizeof r) != 1) return -1;
    memcpy(secret, "sgk-", 4);
    for (size_t i = 0; i < sizeof r; i++) snprintf(secret + 4 + 2 * i, 3, "%02x", r[i]);
    uint8_t h[GW_SHA256_LEN];
    if (config_key_hash(secret, KEYSTORE_SECRET_LEN, h)) return -1;
    for (int i = 0; i < GW_SHA256_LEN; i++) snprintf(sha_hex + 2 * i, 3, "%02x", h[i]);
    explicit_bzero(r, sizeof r);
    return 0;
}

/* ---- SQL ------------------------------------------------------------------------------- */

static char *dump(json_t *doc) {   /* steals doc */
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return s;
}

static char *error_body(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *error_body(const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dump(json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", msg, "type", "invalid_request_error", "param",
                          "code", code));
}

/* The key object the API shows: the spec's fields with their defaults, never a hash. */
static json_t *key_object(const char *id, const char *spec_text, const char *created, const char *updated,
                          const char *revoked) {
    json_t *spec = json_loads(spec_text ? spec_text : "{}", 0, NULL);
    if (!json_is_object(spec)) { json_decref(spec); spec = json_object(); }
    json_t *o = json_pack("{s:s,s:s,s:s}", "id", id, "object", "gateway_key", "source", "database");
    json_t *role = json_object_get(spec, "role");
    json_object_set_new(o, "role", role ? json_incref(role) : json_string("user"));
    static const char *const fields[] = {"routes", "limits", "budget", "alert_percent", "expires_at", "description", NULL};
    for (const char *const *f = fields; *f; f++) {
        json_t *v = json_object_get(spec, *f);
        json_object_set_new(o, *f, v ? json_incref(v) : !strcmp(*f, "alert_percent") ? json_integer(80) : json_null());
    }
    json_object_set_new(o, "created_at", json_integer(created ? strtoll(created, NULL, 10) / 1000 : 0));
    json_object_set_new(o, "updated_at", json_integer(updated ? strtoll(updated, NULL, 10) / 1000 : 0));
    json_object_set_new(o, "revoked_at", revoked ? json_integer(strtoll(revoked, NULL, 10) / 1000) : json_null());
    json_decref(spec);
    return o;
}

typedef struct rows_acc {
    json_t *arr;
    int mode;                  /* 0: key objects; 1: raw {id, sha256, spec}; 2: one text */
    char *text;
} rows_acc;

static int on_row(void *arg, int ncols, const char *const *cols) {
    rows_acc *a = arg;
    if (a->mode == 0 && ncols >= 5) json_array_append_new(a->arr, key_object(cols[0], cols[1], cols[2], cols[3], cols[4]));
    else if (a->mode == 1 && ncols >= 3 && cols[0] && cols[1] && cols[2])
        json_array_append_new(a->arr, json_pack("{s:s,s:s,s:s}", "id", cols[0], "sha256", cols[1], "spec", cols[2]));
    else if (a->mode == 2 && ncols >= 1 && !a->text) {
        sg_buf b;
        sg_buf_init(&b);
        for (int i = 0; i < ncols; i++) sg_buf_printf(&b, "%s%s", i ? "/" : "", cols[i] ? cols[i] : "-");
        a->text = b.data ? b.data : sg_xstrdup("");
    }
    return 0;
}

#define KEY_COLS "id, spec, CAST(created_ms AS TEXT), CAST(updated_ms AS TEXT), CAST(revoked_ms AS TEXT)"

/* The row id as a key object: 200 with *body, 404, or -1. */
static int get_one(ledger_db *db, const char *id, int status, const char *secret, char **body, sg_error *err) {
    rows_acc a = {json_array(), 0, NULL};
    const char *p[] = {id};
    if (ledger_db_select(db, "SELECT " KEY_COLS " FROM gateway_keys WHERE id = ?", p, 1, on_row, &a, err)) {
        json_decref(a.arr);
        return -1;
    }
    if (!json_array_size(a.arr)) {
        json_decref(a.arr);
        *body = error_body("key_not_found", "no gateway key \"%s\" in the database", id);
        return 404;
    }
    json_t *o = json_incref(json_array_get(a.arr, 0));
    json_decref(a.arr);
    if (secret) json_object_set_new(o, "key", json_string(secret));
    *body = dump(o);
    return status;
}

int keystore_db_get(ledger_db *db, const char *id, char **body, sg_error *err) {
    return get_one(db, id, 200, NULL, body, err);
}

int keystore_db_list(ledger_db *db, char **body, sg_error *err) {
    rows_acc a = {json_array(), 0, NULL};
    if (ledger_db_select(db, "SELECT " KEY_COLS " FROM gateway_keys WHERE revoked_ms IS NULL ORDER BY id", NULL, 0,
                         on_row, &a, err)) {
        json_decref(a.arr);
        return -1;
    }
    *body = dump(json_pack("{s:s,s:o}", "object", "list", "data", a.arr));
    return 200;
}

static int exists(ledger_db *db, const char *id, bool *yes, sg_error *err) {
    rows_acc a = {NULL, 2, NULL};
    const char *p[] = {id};
    if (ledger_db_select(db, "SELECT id FROM gateway_keys WHERE id = ?", p, 1, on_row, &a, err)) return -1;
    *yes = a.text != NULL;
    free(a.text);
    return 0;
}

int keystore_db_create(ledger_db *db, const char *id, const char *sha_hex, const json_t *spec, int64_t now_ms,
                       char **body, sg_error *err) {
    bool dup;
    if (exists(db, id, &dup, err)) return -1;
    if (dup) {
        *body = error_body("key_exists", "a gateway key \"%s\" exists or existed (ids are never reused)", id);
        return 409;
    }
    char *st = json_dumps(spec, JSON_COMPACT | JSON_SORT_KEYS);
    char now[24];
    snprintf(now, sizeof now, "%" PRId64, now_ms);
    const char *p[] = {id, sha_hex, st, now, now};
    int64_t n = ledger_db_exec(db,
                               "INSERT INTO gateway_keys (id, sha256, spec, created_ms, updated_ms) "
                               "VALUES (?, ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT))",
                               p, 5, err);
    free(st);
    return n < 0 ? -1 : 0;     /* the caller reads it back with the secret */
}

int keystore_db_patch(ledger_db *db, const char *id, const json_t *patch, int64_t now_ms, char **body, sg_error *err) {
    if (ledger_db_begin(db, err)) return -1;
    rows_acc a = {NULL, 2, NULL};
    const char *p1[] = {id};
    if (ledger_db_select(db, "SELECT spec, CAST(updated_ms AS TEXT) FROM gateway_keys WHERE id = ? AND revoked_ms IS NULL",
                         p1, 1, on_row, &a, err)) {
        ledger_db_rollback(db);
        return -1;
    }
    if (!a.text) {
        ledger_db_rollback(db);
        *body = error_body("key_not_found", "no live gateway key \"%s\" in the database", id);
        return 404;
    }
    /* "spec/updated": the spec is JSON and has no bare '/' at its end */
    char *slash = strrchr(a.text, '/');
    *slash = 0;
    int64_t updated = strtoll(slash + 1, NULL, 10);
    json_t *spec = json_loads(a.text, 0, NULL);
    free(a.text);
    if (!json_is_object(spec)) { json_decref(spec); spec = json_object(); }
    json_object_update(spec, (json_t *)patch);
    char *st = json_dumps(spec, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(spec);
    char now[24];   /* strictly later than the last write: the poll's signature must change */
    snprintf(now, sizeof now, "%" PRId64, now_ms > updated ? now_ms : updated + 1);
    const char *p2[] = {st, now, id};
    int64_t n = ledger_db_exec(db, "UPDATE gateway_keys SET spec = ?, updated_ms = CAST(? AS BIGINT) WHERE id = ?", p2, 3, err);
    free(st);
    if (n < 0 || ledger_db_commit(db, err)) {
        ledger_db_rollback(db);
        return -1;
    }
    return get_one(db, id, 200, NULL, body, err);
}

int keystore_db_revoke(ledger_db *db, const char *id, int64_t now_ms, char **body, sg_error *err) {
    char now[24];
    snprintf(now, sizeof now, "%" PRId64, now_ms);
    /* updated_ms strictly later than the last write, as in a patch: a revocation in the
     * same millisecond as the patch before it must still change the poll's signature */
    const char *p[] = {now, now, now, id};
    int64_t n = ledger_db_exec(db,
                               "UPDATE gateway_keys SET revoked_ms = CAST(? AS BIGINT), updated_ms = CASE WHEN "
                               "CAST(? AS BIGINT) > updated_ms THEN CAST(? AS BIGINT) ELSE updated_ms + 1 END "
                               "WHERE id = ? AND revoked_ms IS NULL",
                               p, 4, err);
    if (n < 0) return -1;
    if (n == 0) {
        *body = error_body("key_not_found", "no live gateway key \"%s\" in the database", id);
        return 404;
    }
    return get_one(db, id, 200, NULL, body, err);
}

int keystore_db_signature(ledger_db *db, char *sig, size_t cap, sg_error *err) {
    rows_acc a = {NULL, 2, NULL};
    if (ledger_db_select(db,
                         "SELECT CAST(COUNT(*) AS TEXT), CAST(COALESCE(MAX(updated_ms), 0) AS TEXT), "
                         "CAST(COALESCE(SUM(updated_ms), 0) AS TEXT) FROM gateway_keys",
                         NULL, 0, on_row, &a, err))
        return -1;
    snprintf(sig, cap, "%s", a.text ? a.text : "");
    free(a.text);
    return 0;
}

json_t *keystore_db_load(ledger_db *db, sg_error *err) {
    rows_acc a = {json_array(), 1, NULL};
    if (ledger_db_select(db, "SELECT id, sha256, spec FROM gateway_keys WHERE revoked_ms IS NULL", NULL, 0, on_row, &a,
                         err)) {
        json_decref(a.arr);
        return NULL;
    }
    return a.arr;
}

/* ---- the worker ------------------------------------------------------------------------ */

typedef struct ks_post {
    keystore *ks;
    json_t *rows;              /* a snapshot, or NULL */
    ks_job *job;               /* a finished call, or NULL */
} ks_post;

static void job_free(ks_job *j) {
    free(j->id);
    free(j->sha_hex);
    if (j->secret) explicit_bzero(j->secret, strlen(j->secret));
    free(j->secret);
    json_decref(j->spec);
    free(j->body);
    free(j);
}

static void on_posted(loop *l, void *arg) {   /* loop thread */
    (void)l;
    ks_post *p = arg;
    if (p->rows) {
        json_decref(p->ks->rows);
        p->ks->rows = p->rows;
        keystore_rebuild(p->ks, p->ks->cfg);
    }
    if (p->job) {
        ks_job *j = p->job;
        j->done(j->arg, j->status, j->body, j->body ? strlen(j->body) : 0);
        job_free(j);
    }
    free(p);
}

static void run_job(ledger_db *db, ks_job *j, sg_error *err) {
    int64_t now = wall_ms();
    int st = -1;
    switch (j->op) {
    case OP_CREATE:
        st = keystore_db_create(db, j->id, j->sha_hex, j->spec, now, &j->body, err);
        if (st == 0) st = get_one(db, j->id, 201, j->secret, &j->body, err);
        break;
    case OP_GET: st = keystore_db_get(db, j->id, &j->body, err); break;
    case OP_LIST: st = keystore_db_list(db, &j->body, err); break;
    case OP_PATCH: st = keystore_db_patch(db, j->id, j->spec, now, &j->body, err); break;
    case OP_REVOKE: st = keystore_db_revoke(db, j->id, now, &j->body, err); break;
    }
    if (st < 0) {
        free(j->body);
        j->body = error_body("keys_unavailable", "the key database failed; try again");
        j->status = 503;
    } else {
        j->status = st;
    }
}

static void *worker_main(void *arg) {
    keystore *ks = arg;
    ledger_db *db = NULL;
    unsigned db_gen = 0;
    int64_t retry_at = 0, next_poll = 0;
    bool down = false;
    char last_sig[128] = "";
    bool have_sig = false;
    for (;;) {
        pthread_mutex_lock(&ks->mu);
        while (!ks->head && !ks->stop && wall_ms() < next_poll) {
            int64_t t = next_poll;
            struct timespec ts = {t / 1000, (t % 1000) * 1000000};
            pthread_cond_timedwait(&ks->cv, &ks->mu, &ts);
        }
        if (ks->stop && !ks->head) { pthread_mutex_unlock(&ks->mu); break; }
        ks_job *j = ks->head;
        if (j) {
            ks->head = j->next;
            if (!ks->head) ks->tail = NULL;
            ks->queued--;
        }
        unsigned gen = ks->gen;
        gw_ledger_kind kind = ks->kind;
        char *target = ks->target ? sg_xstrdup(ks->target) : NULL;
        pthread_mutex_unlock(&ks->mu);

        sg_error err;
        if (db && db_gen != gen) { ledger_db_close(db); db = NULL; retry_at = 0; have_sig = false; }
        if (!db && wall_ms() >= retry_at) {
            db = ledger_db_open(kind, target, false, &err);
            db_gen = gen;
            if (!db) {
                retry_at = wall_ms() + KS_RETRY_MS;
                if (!down) SG_WARN("keys: the database is unavailable, serving the last keys read from it: %s", err.msg);
                down = true;
            }
        }
        free(target);
        bool changed = false;
        if (j) {
            if (db) {
                run_job(db, j, &err);
                changed = j->status == 200 || j->status == 201;
                if (j->status == 503) {
                    SG_WARN("keys: %s", err.msg);
                    if (!ledger_db_ok(db)) { ledger_db_close(db); db = NULL; }
                }
            } else {
                j->body = error_body("keys_unavailable", "the key database is unavailable; try again");
                j->status = 503;
            }
        }
        if (db && (changed || wall_ms() >= next_poll)) {
            char sig[128];
            json_t *rows = NULL;
            int rc = keystore_db_signature(db, sig, sizeof sig, &err);
            if (!rc && (!have_sig || strcmp(sig, last_sig))) {
                rows = keystore_db_load(db, &err);
                if (!rows) rc = -1;
                else {
                    snprintf(last_sig, sizeof last_sig, "%s", sig);
                    have_sig = true;
                }
            }
            if (rc) {
                if (!down) SG_WARN("keys: the database is unavailable, serving the last keys read from it: %s", err.msg);
                down = true;
                if (!ledger_db_ok(db)) { ledger_db_close(db); db = NULL; retry_at = wall_ms() + KS_RETRY_MS; }
            } else if (down) {
                SG_INFO("keys: the database is back");
                down = false;
            }
            if (rows) {
                ks_post *p = sg_xcalloc(1, sizeof *p);
                p->ks = ks;
                p->rows = rows;
                loop_post(ks->loop, on_posted, p);
            }
            next_poll = wall_ms() + KEYSTORE_POLL_MS;
        } else if (!db) {
            next_poll = wall_ms() + KEYSTORE_POLL_MS;
        }
        if (j) {   /* after the snapshot: the caller's next request sees its own write */
            ks_post *p = sg_xcalloc(1, sizeof *p);
            p->ks = ks;
            p->job = j;
            loop_post(ks->loop, on_posted, p);
        }
    }
    ledger_db_close(db);
    return NULL;
}

/* ---- the served set -------------------------------------------------------------------- */

keystore *keystore_new(loop *l) {
    keystore *ks = sg_xcalloc(1, sizeof *ks);
    ks->loop = l;
    pthread_mutex_init(&ks->mu, NULL);
    pthread_cond_init(&ks->cv, NULL);
    return ks;
}

void keystore_use_db(keystore *ks, gw_ledger_kind kind, const char *target) {
    pthread_mutex_lock(&ks->mu);
    bool same = ks->kind == kind && ks->target && target && !strcmp(ks->target, target);
    if (!same) {
        ks->kind = kind;
        free(ks->target);
        ks->target = target ? sg_xstrdup(target) : NULL;
        ks->gen++;
        pthread_cond_signal(&ks->cv);
    }
    if (!ks->running) {
        if (pthread_create(&ks->th, NULL, worker_main, ks) == 0) ks->running = true;
        else SG_ERROR("keys: cannot start the database worker; only the configuration's keys are served");
    }
    pthread_mutex_unlock(&ks->mu);
}

static void key_free(ks_key *k) {
    free(k->spec);
    free(k->k.id);
    free(k->k.routes);
    free(k);
}

void keystore_hold(const gw_key *k) {
    if (k && k->dyn) k->dyn->refs++;
}

void keystore_release(const gw_key *k) {
    if (k && k->dyn && --k->dyn->refs == 0) key_free(k->dyn);
}

static int64_t micro(json_t *o, const char *name) {
    json_t *v = json_object_get(o, name);
    return json_is_number(v) ? (int64_t)llround(json_number_value(v) * 1e6) : -1;
}

static int64_t limit(json_t *o, const char *name) {
    json_t *v = json_object_get(o, name);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static ks_key *key_build(const gw_config *c, json_t *row) {
    const char *id = json_string_value(json_object_get(row, "id"));
    const char *hex = json_string_value(json_object_get(row, "sha256"));
    if (!id || !hex || strlen(hex) != 2 * GW_SHA256_LEN) return NULL;
    ks_key *k = sg_xcalloc(1, sizeof *k);
    for (int i = 0; i < GW_SHA256_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) { free(k); return NULL; }
        k->k.sha256[i] = (uint8_t)(hi << 4 | lo);
    }
    const char *text = json_string_value(json_object_get(row, "spec"));
    json_t *spec = json_loads(text ? text : "{}", 0, NULL);
    if (!json_is_object(spec)) { json_decref(spec); spec = json_object(); }
    k->spec = sg_xstrdup(text ? text : "{}");
    k->cfg = c;
    k->k.id = sg_xstrdup(id);
    k->k.dyn = k;
    k->refs = 1;
    const char *role = json_string_value(json_object_get(spec, "role"));
    k->k.role = role && !strcmp(role, "admin") ? GW_ROLE_ADMIN : role && !strcmp(role, "metrics") ? GW_ROLE_METRICS : GW_ROLE_USER;
    json_t *routes = json_object_get(spec, "routes");
    k->k.all_routes = !json_is_array(routes);
    if (json_is_array(routes)) {
        k->k.routes = sg_xcalloc(json_array_size(routes) + 1, sizeof *k->k.routes);
        size_t i;
        json_t *r;
        json_array_foreach(routes, i, r) {
            const gw_route *rt = json_is_string(r) ? route_named(c, json_string_value(r)) : NULL;
            if (rt) k->k.routes[k->k.n_routes++] = rt;
        }
    }
    json_t *l = json_object_get(spec, "limits"), *b = json_object_get(spec, "budget");
    k->k.limits = (gw_limits){limit(l, "rpm"), limit(l, "tpm"), limit(l, "concurrency")};
    json_t *ap = json_object_get(spec, "alert_percent");
    k->k.budget = (gw_budget){micro(b, "daily_usd"), micro(b, "monthly_usd"), micro(b, "total_usd"),
                              json_is_integer(ap) ? (int)json_integer_value(ap) : 80};
    json_t *ex = json_object_get(spec, "expires_at");
    k->expires_at = json_is_integer(ex) ? (int64_t)json_integer_value(ex) : 0;
    json_decref(spec);
    return k;
}

static size_t slot_of(const uint8_t *h, size_t cap) {
    uint64_t x;
    memcpy(&x, h, sizeof x);   /* a SHA-256 is already uniform */
    return (size_t)(x & (cap - 1));
}

static void set_clear(keystore *ks) {
    for (size_t i = 0; i < ks->n; i++) keystore_release(&ks->keys[i]->k);
    free(ks->keys);
    free(ks->table);
    ks->keys = NULL;
    ks->table = NULL;
    ks->n = ks->cap = 0;
}

static ks_key *lookup(ks_key *const *table, size_t cap, const uint8_t *h) {
    for (size_t s = cap ? slot_of(h, cap) : 0; cap && table[s]; s = (s + 1) & (cap - 1))
        if (!memcmp(table[s]->k.sha256, h, GW_SHA256_LEN)) return table[s];
    return NULL;
}

/* The key a row describes: the one already served when nothing changed (same id, spec
 * and configuration: a poll that saw another key change rebuilds little), else built. */
static ks_key *key_for(const keystore *ks, const gw_config *c, json_t *row) {
    const char *id = json_string_value(json_object_get(row, "id"));
    const char *hex = json_string_value(json_object_get(row, "sha256"));
    const char *spec = json_string_value(json_object_get(row, "spec"));
    uint8_t h[GW_SHA256_LEN];
    bool ok = hex && strlen(hex) == 2 * GW_SHA256_LEN;
    for (int i = 0; ok && i < GW_SHA256_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        ok = hi >= 0 && lo >= 0;
        h[i] = (uint8_t)(hi << 4 | lo);
    }
    ks_key *old = ok ? lookup(ks->table, ks->cap, h) : NULL;
    if (old && old->cfg == c && id && spec && !strcmp(old->k.id, id) && !strcmp(old->spec, spec)) {
        old->refs++;
        return old;
    }
    return key_build(c, row);
}

void keystore_rebuild(keystore *ks, const gw_config *c) {
    size_t n = json_array_size(ks->rows);
    ks_key **keys = NULL, **table = NULL;
    size_t nk = 0, cap = 0;
    if (n && c) {
        keys = sg_xcalloc(n, sizeof *keys);
        cap = 16;
        while (cap < 2 * n) cap <<= 1;
        table = sg_xcalloc(cap, sizeof *table);
        size_t i;
        json_t *row;
        json_array_foreach(ks->rows, i, row) {
            const char *id = json_string_value(json_object_get(row, "id"));
            if (id && config_key_by_id(c, id)) {
                SG_WARN("keys: the database's key \"%s\" is not served: the configuration file has a key with that id", id);
                continue;
            }
            ks_key *k = key_for(ks, c, row);
            if (!k) continue;
            if (config_key_find_hash(c, k->k.sha256) || lookup(table, cap, k->k.sha256)) {   /* the file's key wins */
                keystore_release(&k->k);
                continue;
            }
            size_t s = slot_of(k->k.sha256, cap);
            while (table[s]) s = (s + 1) & (cap - 1);
            table[s] = k;
            keys[nk++] = k;
        }
    }
    set_clear(ks);   /* the old set's references go; what the new one kept lives on */
    ks->cfg = c;
    ks->keys = keys;
    ks->table = table;
    ks->n = nk;
    ks->cap = cap;
}

const gw_key *keystore_find_hash(const keystore *ks, const uint8_t hash[GW_SHA256_LEN], int64_t now_s) {
    if (!ks || !ks->cap) return NULL;
    for (size_t s = slot_of(hash, ks->cap); ks->table[s]; s = (s + 1) & (ks->cap - 1)) {
        ks_key *k = ks->table[s];
        if (memcmp(k->k.sha256, hash, GW_SHA256_LEN)) continue;
        if (k->expires_at && now_s >= k->expires_at) return NULL;
        return &k->k;
    }
    return NULL;
}

size_t keystore_count(const keystore *ks) { return ks ? ks->n : 0; }
const gw_key *keystore_key(const keystore *ks, size_t i) { return ks && i < ks->n ? &ks->keys[i]->k : NULL; }

void keystore_free(keystore *ks) {
    if (!ks) return;
    pthread_mutex_lock(&ks->mu);
    ks->stop = true;
    pthread_cond_signal(&ks->cv);
    bool running = ks->running;
    pthread_mutex_unlock(&ks->mu);
    if (running) pthread_join(ks->th, NULL);
    sg_error e;   /* what the worker posted refers to ks: run it now */
    loop_run_once(ks->loop, 0, &e);
    set_clear(ks);
    json_decref(ks->rows);
    free(ks->target);
    pthread_mutex_destroy(&ks->mu);
    pthread_cond_destroy(&ks->cv);
    free(ks);
}

/* ---- admin calls ----------------------------------------------------------------------- */

static void answer_now(keystore_done_fn done, void *arg, int status, char *body) {
    done(arg, status, body, strlen(body));
    free(body);
}

/* A key from the configuration file, as the API shows it (read-only). */
static char *file_key_body(const gw_key *k) {
    json_t *routes = json_null();
    if (!k->all_routes) {
        routes = json_array();
        for (size_t i = 0; i < k->n_routes; i++) json_array_append_new(routes, json_string(k->routes[i]->name));
    }
    return dump(json_pack("{s:s,s:s,s:s,s:s,s:o}", "id", k->id, "object", "gateway_key", "source", "config", "role",
                          config_key_role_name(k->role), "routes", routes));
}

void keystore_admin(keystore *ks, const gw_config *c, const char *method, const char *id, const char *body,
                    size_t len, keystore_done_fn done, void *arg) {
    ks_job *j = sg_xcalloc(1, sizeof *j);
    j->done = done;
    j->arg = arg;
    sg_error err;
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST"), patch = !strcmp(method, "PATCH"),
         del = !strcmp(method, "DELETE");
    if (id && !valid_id(id)) {
        job_free(j);
        answer_now(done, arg, 404, error_body("key_not_found", "no gateway key by that id"));
        return;
    }
    const gw_key *fk = id ? config_key_by_id(c, id) : NULL;
    if (fk && get) {
        job_free(j);
        answer_now(done, arg, 200, file_key_body(fk));
        return;
    }
    if (fk) {
        job_free(j);
        answer_now(done, arg, 409, error_body("key_in_config", "the key \"%s\" is defined in the configuration file; "
                                                               "change it there", id));
        return;
    }
    if (!id && get) j->op = OP_LIST;
    else if (!id && post) {
        j->op = OP_CREATE;
        if (keystore_parse_body(body, len, c, true, &j->spec, &j->id, &err)) {
            job_free(j);
            answer_now(done, arg, 400, error_body("invalid_key_request", "%s", err.msg));
            return;
        }
        if (config_key_by_id(c, j->id)) {
            answer_now(done, arg, 409, error_body("key_in_config", "the configuration file has a key \"%s\"", j->id));
            job_free(j);
            return;
        }
        j->secret = sg_xcalloc(1, KEYSTORE_SECRET_LEN + 1);
        j->sha_hex = sg_xcalloc(1, 2 * GW_SHA256_LEN + 1);
        if (keystore_new_secret(j->secret, j->sha_hex)) {
            job_free(j);
            answer_now(done, arg, 500, error_body("internal_error", "no random bytes for a secret"));
            return;
        }
    } else if (id && get) {
        j->op = OP_GET;
    } else if (id && patch) {
        j->op = OP_PATCH;
        if (keystore_parse_body(body, len, c, false, &j->spec, NULL, &err)) {
            job_free(j);
            answer_now(done, arg, 400, error_body("invalid_key_request", "%s", err.msg));
            return;
        }
    } else if (id && del) {
        j->op = OP_REVOKE;
    } else {
        job_free(j);
        answer_now(done, arg, 405, error_body("method_not_allowed", "%s is not allowed here: GET or POST /admin/keys; "
                                                                    "GET, PATCH or DELETE /admin/keys/{id}", method));
        return;
    }
    if (id && !j->id) j->id = sg_xstrdup(id);
    pthread_mutex_lock(&ks->mu);
    bool running = ks->running, full = !running || ks->queued >= KEYSTORE_QUEUE_MAX;
    if (!full) {
        if (ks->tail) ks->tail->next = j;
        else ks->head = j;
        ks->tail = j;
        ks->queued++;
        pthread_cond_signal(&ks->cv);
    }
    pthread_mutex_unlock(&ks->mu);
    if (full) {
        job_free(j);
        answer_now(done, arg, 503, error_body("keys_unavailable", running ? "too many key calls at once; try again"
                                                                          : "the key database is not in use"));
    }
}
