/* cmd_usage.c: `smolgate usage`: the ledger read back on the command line (the same
 * query and sums as GET /v1/usage; ledger_usage.h), from the database itself or, with
 * --url, from a running gateway's GET /v1/usage: then the gateway key decides what is
 * visible (a user key reads its own usage only; docs/config.md, "Roles"). */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "gateway/config.h"
#include "gateway/ledger_db.h"
#include "gateway/ledger_usage.h"

static const char usage_help_text[] =
    "usage: smolgate usage [source] [filters] [--group-by LIST] [--format table|csv|json]\n"
    "source (default: --db smolgate.db):\n"
    "  --db PATH            the SQLite ledger\n"
    "  --postgres URL       the PostgreSQL ledger (postgresql://... or key=value; libpq's\n"
    "                       PG* variables fill what it leaves out, PGPASSWORD included)\n"
    "  -c, --config FILE    the ledger: section of a gateway configuration\n"
    "  --url URL            a running gateway (http://127.0.0.1:8080): its GET /v1/usage,\n"
    "                       with the gateway key in $SMOLGATE_API_KEY (or --api-key KEY);\n"
    "                       a user key sees its own usage only\n"
    "filters (all optional):\n"
    "  --from TIME          records at or after TIME: 2025-11-24, 2025-11-24T10:00:00Z,\n"
    "                       2025-11-24T12:00:00+02:00, or unix seconds\n"
    "  --to TIME            records before TIME (exclusive)\n"
    "  --key ID --route NAME --provider NAME --model NAME   exact matches\n"
    "  --group-by LIST      comma-separated: key, route, provider, model, and hour or day\n"
    "  --format FMT         table (default), csv or json\n"
    "Sums: requests, errors (status >= 400), tokens per class (input is uncached input;\n"
    "reasoning is part of output), cost in USD over the priced requests, unpriced requests.\n";

static void usage_help(FILE *f) {
    fputs(usage_help_text, f);
}

static size_t collect(char *p, size_t size, size_t n, void *arg) {
    sg_buf_append(arg, p, size * n);
    return size * n;
}

/* GET URL/v1/usage?query with the key; the body into out. Returns the HTTP status, or -1
 * (message printed) when the gateway cannot be reached. */
static long fetch_usage(const char *base, const char *query, const char *key, sg_buf *out) {
    CURL *c = curl_easy_init();
    if (!c) { fprintf(stderr, "smolgate usage: libcurl failed to start\n"); return -1; }
    sg_buf u;
    sg_buf_init(&u);
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/') bl--;
    sg_buf_append(&u, base, bl);
    sg_buf_printf(&u, "/v1/usage%s%s", *query ? "?" : "", query);
    struct curl_slist *h = NULL;
    sg_buf auth;
    sg_buf_init(&auth);
    if (key) {
        sg_buf_printf(&auth, "Authorization: Bearer %s", key);
        h = curl_slist_append(h, auth.data);
    }
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, u.data);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long status = -1;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else fprintf(stderr, "smolgate usage: %s: %s\n", u.data, ebuf[0] ? ebuf : curl_easy_strerror(rc));
    curl_slist_free_all(h);
    if (auth.data) explicit_bzero(auth.data, auth.len);
    sg_buf_free(&auth);
    sg_buf_free(&u);
    curl_easy_cleanup(c);
    return status;
}

/* One name=value of the query string, percent-encoded. */
static void query_add(sg_buf *q, const char *name, const char *value) {
    char *e = curl_easy_escape(NULL, value, 0);
    sg_buf_printf(q, "%s%s=%s", q->len ? "&" : "", name, e ? e : "");
    curl_free(e);
}

static int usage_over_http(const char *url, const char *query, const char *key, const char *format) {
    sg_buf body;
    sg_buf_init(&body);
    long status = fetch_usage(url, query, key, &body);
    int rc = 1;
    if (status == 200 && !strcmp(format, "json")) {
        fwrite(body.data ? body.data : "", 1, body.len, stdout);
        rc = 0;
    } else if (status == 200) {
        usage_filter f;
        usage_result r;
        sg_error err;
        if (usage_parse_json(body.data ? body.data : "", body.len, &f, &r, &err)) {
            fprintf(stderr, "smolgate usage: %s: %s\n", url, err.msg);
        } else {
            sg_buf out;
            sg_buf_init(&out);
            if (!strcmp(format, "csv")) usage_render_csv(&f, &r, &out);
            else usage_render_table(&f, &r, &out);
            fwrite(out.data ? out.data : "", 1, out.len, stdout);
            sg_buf_free(&out);
            usage_result_free(&r);
            rc = 0;
        }
    } else if (status > 0) {
        fprintf(stderr, "smolgate usage: the gateway answered %ld: %.*s\n", status, (int)(body.len > 500 ? 500 : body.len),
                body.data ? body.data : "");
    }
    sg_buf_free(&body);
    return rc;
}

int cli_usage(int argc, char **argv) {
    usage_filter f;
    usage_filter_init(&f);
    const char *db_path = NULL, *pg_url = NULL, *config_path = NULL, *format = "table";
    const char *gw_url = NULL, *api_key = getenv("SMOLGATE_API_KEY");
    sg_buf query;   /* the filters again, as GET /v1/usage takes them (--url) */
    sg_buf_init(&query);
    sg_error err;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_help(stdout); return 0; }
        if (!v) { fprintf(stderr, "smolgate usage: %s needs a value\n", a); return 2; }
        i++;
        if (!strcmp(a, "--db")) db_path = v;
        else if (!strcmp(a, "--url")) gw_url = v;
        else if (!strcmp(a, "--api-key")) api_key = v;
        else if (!strcmp(a, "--postgres")) pg_url = v;
        else if (!strcmp(a, "-c") || !strcmp(a, "--config")) config_path = v;
        else if (!strcmp(a, "--format")) format = v;
        else if (!strncmp(a, "--", 2) && strlen(a) < 32) {
            char name[32];
            snprintf(name, sizeof name, "%s", a + 2);
            for (char *p = name; *p; p++) if (*p == '-') *p = '_';
            if (!strcmp(name, "from") || !strcmp(name, "to") || !strcmp(name, "key") || !strcmp(name, "route") ||
                !strcmp(name, "provider") || !strcmp(name, "model") || !strcmp(name, "group_by")) {
                if (usage_filter_set(&f, name, v, &err)) {
                    fprintf(stderr, "smolgate usage: %s\n", err.msg);
                    sg_buf_free(&query);
                    return 2;
                }
                query_add(&query, name, v);
                continue;
            }
            cli_unknown_option("usage", a, usage_help_text);
            sg_buf_free(&query);
            return 2;
        } else {
            fprintf(stderr, "smolgate usage: unknown argument %s\n", a);
            usage_help(stderr);
            sg_buf_free(&query);
            return 2;
        }
    }
    if (gw_url) {   /* over HTTP: the gateway filters by the key's role */
        int rc = 2;
        if (db_path || pg_url || config_path) fprintf(stderr, "smolgate usage: give one of --db, --postgres, --config, --url\n");
        else if (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json"))
            fprintf(stderr, "smolgate usage: --format: table, csv or json\n");
        else rc = usage_over_http(gw_url, query.data ? query.data : "", api_key, format);
        sg_buf_free(&query);
        return rc;
    }
    sg_buf_free(&query);
    if (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json")) {
        fprintf(stderr, "smolgate usage: --format: table, csv or json\n");
        return 2;
    }
    if (!!db_path + !!pg_url + !!config_path > 1) {
        fprintf(stderr, "smolgate usage: give one of --db, --postgres, --config\n");
        return 2;
    }
    gw_ledger_kind kind = GW_LEDGER_SQLITE;
    const char *target = db_path ? db_path : "smolgate.db";
    gw_config *cfg = NULL;
    if (pg_url) { kind = GW_LEDGER_POSTGRES; target = pg_url; }
    if (config_path) {
        if (config_load(&cfg, config_path, NULL, &err)) { fprintf(stderr, "smolgate usage: %s\n", err.msg); return 1; }
        kind = cfg->ledger.kind;
        target = kind == GW_LEDGER_POSTGRES ? cfg->ledger.postgres_url : cfg->ledger.sqlite_path;
        if (!target) target = "smolgate.db";
    }
    ledger_db *db = ledger_db_open(kind, target, true, &err);
    config_free(cfg);   /* the URL was copied into the connection */
    if (!db) { fprintf(stderr, "smolgate usage: %s\n", err.msg); return 1; }
    usage_result r;
    int rc = usage_query(db, &f, &r, &err);
    ledger_db_close(db);
    if (rc) { fprintf(stderr, "smolgate usage: %s\n", err.msg); return 1; }
    sg_buf out;
    sg_buf_init(&out);
    if (!strcmp(format, "json")) usage_render_json(&f, &r, &out);
    else if (!strcmp(format, "csv")) usage_render_csv(&f, &r, &out);
    else usage_render_table(&f, &r, &out);
    fwrite(out.data ? out.data : "", 1, out.len, stdout);
    sg_buf_free(&out);
    usage_result_free(&r);
    return 0;
}
