/*
 * stub_storage.h: the functions of a storage that opens and refuses everything else, for
 * test plugins whose point is their descriptor or table, not their behaviour. Written
 * against the version-1 functions only, so a plugin built from the frozen version-1
 * header (tests/sdk/abi-v1) uses it too.
 */
#ifndef KODO_TEST_STUB_STORAGE_H
#define KODO_TEST_STUB_STORAGE_H

#include <kodo/kodo_plugin.h>

static int stub_handle;

static kodo_status stub_open(const kodo_option *const *options, size_t option_count,
                             const kodo_host_api *host, kodo_storage **out, kodo_error *error) {
  (void)options;
  (void)option_count;
  (void)host;
  (void)error;
  *out = (kodo_storage *)&stub_handle;
  return KODO_OK;
}
static void stub_close(kodo_storage *storage) {
  (void)storage;
}
static kodo_status stub_create_schema(kodo_storage *storage, kodo_error *error) {
  (void)storage;
  (void)error;
  return KODO_OK;
}
static kodo_status stub_append(kodo_storage *storage, const kodo_event *const *events, size_t count,
                               kodo_error *error) {
  (void)storage;
  (void)events;
  (void)count;
  (void)error;
  return KODO_ERR_NOT_SUPPORTED;
}
static kodo_status stub_read_events(kodo_storage *storage, const kodo_read_request *request,
                                    kodo_event_page *out, kodo_error *error) {
  (void)storage;
  (void)request;
  (void)out;
  (void)error;
  return KODO_ERR_NOT_SUPPORTED;
}
static kodo_status stub_get_execution(kodo_storage *storage, const char *fid, const char *username,
                                      kodo_execution_page *out, kodo_error *error) {
  (void)storage;
  (void)fid;
  (void)username;
  (void)out;
  (void)error;
  return KODO_ERR_NOT_FOUND;
}

/* The plugin's own descriptor, answered for ABI version 1 only. */
static kodo_status stub_entry(uint32_t host_min, uint32_t host_max, const kodo_plugin *descriptor,
                              const kodo_plugin **plugin_out, uint32_t *abi_out) {
  *abi_out = 1u;
  if (host_min > 1u || host_max < 1u) return KODO_ERR_ABI_MISMATCH;
  *plugin_out = descriptor;
  return KODO_OK;
}

#endif
