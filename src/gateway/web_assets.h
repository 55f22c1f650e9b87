/* web_assets.h: the dashboard's files (web/), embedded in the binary at build time by
 * tools/embed.sh (the Makefile writes $(BUILD)/gen/web_assets.c), so that smolgate serves
 * its page with no file to install and nothing fetched from elsewhere. */
#ifndef SG_GATEWAY_WEB_ASSETS_H
#define SG_GATEWAY_WEB_ASSETS_H

#include <stddef.h>

typedef struct web_asset {
    const char *name;                 /* base name: "dashboard.html" */
    const unsigned char *data;        /* the bytes (NUL-terminated past len) */
    size_t len;
} web_asset;

/* Every file of web/, then one entry with name NULL. */
extern const web_asset web_assets[];

#endif
