/* alert_hook.h: budget alerts sent to a webhook (config `alerts.webhook_url`).
 *
 * Contract: alert_hook_send queues a JSON body and returns at once (any thread); one
 * worker thread POSTs each (libcurl, content-type application/json) and retries a failed
 * one (no answer, or a status other than 2xx) up to `retries` times, waiting 0.5 s, 1 s,
 * 2 s... in between. At most ALERT_HOOK_QUEUE_MAX bodies wait; beyond that a body is
 * dropped with a warning. Logs never show the URL (it may carry a token). The bodies
 * carry no secret (the caller builds them from ids and amounts). */
#ifndef SG_GATEWAY_ALERT_HOOK_H
#define SG_GATEWAY_ALERT_HOOK_H

#include <stdint.h>

#define ALERT_HOOK_QUEUE_MAX 256

typedef struct alert_hook alert_hook;

alert_hook *alert_hook_new(void);
/* url NULL: alerts are only logged (queued ones are dropped). */
void alert_hook_configure(alert_hook *h, const char *url, uint32_t timeout_ms, int retries);
void alert_hook_send(alert_hook *h, const char *json_body);
/* Delivers what is queued (each body's tries bounded as above), then frees. */
void alert_hook_free(alert_hook *h);

#endif
