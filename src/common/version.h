/* version.h: the release this source tree is. One place, read by `smolgate --version`,
 * the gateway's start-up line and its Server header. */
#ifndef SG_COMMON_VERSION_H
#define SG_COMMON_VERSION_H

#define SMOLGATE_VERSION "0.4.0"

#endif
