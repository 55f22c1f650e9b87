/* cmd_usage.c: `smolgate usage`: the ledger read back on the command line (the same
 * query and sums as GET /v1/usage; ledger_usage.h). */
#include <stdio.h>
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

int cli_usage(int argc, char **argv) {
    usage_filter f;
    usage_filter_init(&f);
    const char *db_path = NULL, *pg_url = NULL, *config_path = NULL, *format = "table";
    sg_error err;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_help(stdout); return 0; }
        if (!v) { fprintf(stderr, "smolgate usage: %s needs a value\n", a); return 2; }
        i++;
        if (!strcmp(a, "--db")) db_path = v;
        else if (!strcmp(a, "--postgres")) pg_url = v;
        else if (!strcmp(a, "-c") || !strcmp(a, "--config")) config_path = v;
        else if (!strcmp(a, "--format")) format = v;
        else if (!strncmp(a, "--", 2) && strlen(a) < 32) {
            char name[32];
            snprintf(name, sizeof name, "%s", a + 2);
            for (char *p = name; *p; p++) if (*p == '-') *p = '_';
            if (!strcmp(name, "from") || !strcmp(name, "to") || !strcmp(name, "key") || !strcmp(name, "route") ||
                !strcmp(name, "provider") || !strcmp(name, "model") || !strcmp(name, "group_by")) {
                if (usage_filter_set(&f, name, v, &err)) { fprintf(stderr, "smolgate usage: %s\n", err.msg); return 2; }
                continue;
            }
            cli_unknown_option("usage", a, usage_help_text);
            return 2;
        } else {
            fprintf(stderr, "smolgate usage: unknown argument %s\n", a);
            usage_help(stderr);
            return 2;
        }
    }
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
