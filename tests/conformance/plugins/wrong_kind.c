/*
 * wrong_kind.c: a transport plugin. Asked for as a storage plugin, the loader must refuse it
 * naming both kinds. Its functions only refuse: it is never opened.
 */
#include <kodo/kodo_plugin.h>

static kodo_status open_transport(const kodo_option *const *options, size_t option_count,
                                  const kodo_host_api *host, kodo_transport **out,
                                  kodo_error *error) {
  (void)options;
  (void)option_count;
  (void)host;
  (void)out;
  (void)error;
  return KODO_ERR_NOT_SUPPORTED;
}
static void close_transport(kodo_transport *transport) {
  (void)transport;
}
static kodo_status publish(kodo_transport *transport, const kodo_event *const *events, size_t count,
                           int32_t timeout_ms, kodo_error *error) {
  (void)transport;
  (void)events;
  (void)count;
  (void)timeout_ms;
  (void)error;
  return KODO_ERR_NOT_SUPPORTED;
}
static kodo_status consumer_open(kodo_transport *transport, const char *group, const char *name,
                                 kodo_consumer **out, kodo_error *error) {
  (void)transport;
  (void)group;
  (void)name;
  (void)out;
  (void)error;
  return KODO_ERR_NOT_SUPPORTED;
}
static void consumer_close(kodo_consumer *consumer) {
  (void)consumer;
}
static kodo_status read_deliveries(kodo_consumer *consumer, size_t max, int32_t block_ms,
                                   kodo_delivery_batch *out, kodo_error *error) {
  (void)consumer;
  (void)max;
  (void)block_ms;
  (void)out;
  (void)error;
  return KODO_ERR_NOT_SUPPORTED;
}
static kodo_status ack(kodo_consumer *consumer, const uint64_t *delivery_ids, size_t count,
                       kodo_error *error) {
  (void)consumer;
  (void)delivery_ids;
  (void)count;
  (void)error;
  return KODO_ERR_NOT_SUPPORTED;
}

/* Designated initializers: the table grows at its end without touching this code. */
static const kodo_transport_api table = {
    .struct_size = sizeof(kodo_transport_api),
    .open = open_transport,
    .close = close_transport,
    .publish = publish,
    .consumer_open = consumer_open,
    .consumer_close = consumer_close,
    .read = read_deliveries,
    .ack = ack,
};
static const kodo_plugin descriptor = {sizeof(kodo_plugin),
                                       KODO_ABI_VERSION,
                                       KODO_KIND_TRANSPORT,
                                       "wrong_kind",
                                       "1.0",
                                       "a transport, not a storage",
                                       0,
                                       NULL,
                                       0,
                                       NULL,
                                       &table,
                                       NULL};

KODO_EXPORT kodo_status kodo_plugin_entry(uint32_t host_min, uint32_t host_max,
                                          const kodo_host_api *host, const kodo_plugin **plugin_out,
                                          uint32_t *abi_out, kodo_error *error) {
  (void)host;
  (void)error;
  *abi_out = KODO_ABI_VERSION;
  if (KODO_ABI_VERSION < host_min || KODO_ABI_VERSION > host_max) return KODO_ERR_ABI_MISMATCH;
  *plugin_out = &descriptor;
  return KODO_OK;
}
