/*
 * missing_required_function.c: a storage table without append. The loader must refuse it,
 * naming the plugin and the missing function, before anything is opened.
 */
#include <kodo/kodo_plugin.h>

static kodo_status open_storage(const kodo_option *const *options, size_t option_count,
                                const kodo_host_api *host, kodo_storage **out, kodo_error *error) {
  (void)options;
  (void)option_count;
  (void)host;
  (void)out;
  (void)error;
  return KODO_ERR_NOT_SUPPORTED;
}
static void close_storage(kodo_storage *storage) {
  (void)storage;
}
static kodo_status create_schema(kodo_storage *storage, kodo_error *error) {
  (void)storage;
  (void)error;
  return KODO_ERR_NOT_SUPPORTED;
}
static kodo_status read_events(kodo_storage *storage, const kodo_read_request *request,
                               kodo_event_page *out, kodo_error *error) {
  (void)storage;
  (void)request;
  (void)out;
  (void)error;
  return KODO_ERR_NOT_SUPPORTED;
}
static kodo_status get_execution(kodo_storage *storage, const char *fid, const char *username,
                                 kodo_execution_page *out, kodo_error *error) {
  (void)storage;
  (void)fid;
  (void)username;
  (void)out;
  (void)error;
  return KODO_ERR_NOT_SUPPORTED;
}

/* Designated initializers: the table grows at its end without touching this code. */
static const kodo_storage_api table = {
    .struct_size = sizeof(kodo_storage_api),
    .open = open_storage,
    .close = close_storage,
    .create_schema = create_schema,
    /* .append is missing on purpose: the loader must name it */
    .read_events = read_events,
    .get_execution = get_execution,
};
static const kodo_plugin descriptor = {sizeof(kodo_plugin),
                                       KODO_ABI_VERSION,
                                       KODO_KIND_STORAGE,
                                       "missing_required_function",
                                       "1.0",
                                       "a storage without append",
                                       0,
                                       NULL,
                                       0,
                                       &table,
                                       NULL,
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
