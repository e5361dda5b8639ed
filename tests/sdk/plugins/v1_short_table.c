/*
 * v1_short_table.c: built from the frozen version-1 header (tests/sdk/abi-v1). Its storage
 * table declares a struct_size that ends before list_executions, yet the functions past it
 * are set to ones that abort: the host must read none of them (they are "not supported").
 * Its open succeeds only when the host API said ABI version 0 during the entry call and
 * says the agreed version (1) from then on.
 */
#include <kodo/kodo_plugin.h>

#include <stdlib.h>

#include "stub_storage.h"

static uint32_t abi_seen_at_entry = 99u;

static kodo_status checked_open(const kodo_option *const *options, size_t option_count,
                                const kodo_host_api *host, kodo_storage **out, kodo_error *error) {
  if (abi_seen_at_entry != 0u || !host || host->abi_version != 1u) {
    error->code = KODO_ERR_INVALID_ARGUMENT;
    error->message = abi_seen_at_entry != 0u ? "host API abi_version was not 0 in the entry call"
                                             : "host API abi_version is not 1 in open";
    return KODO_ERR_INVALID_ARGUMENT;
  }
  return stub_open(options, option_count, host, out, error);
}

static kodo_status never_list(kodo_storage *storage, const kodo_list_request *request,
                              kodo_execution_page *out, kodo_error *error) {
  (void)storage;
  (void)request;
  (void)out;
  (void)error;
  abort();
}
static kodo_status never_archive(kodo_storage *storage, const char *fid, const char *username,
                                 kodo_error *error) {
  (void)storage;
  (void)fid;
  (void)username;
  (void)error;
  abort();
}
static kodo_status never_purge(kodo_storage *storage, double older_than, int64_t *purged,
                               kodo_error *error) {
  (void)storage;
  (void)older_than;
  (void)purged;
  (void)error;
  abort();
}
static kodo_status never_metrics(kodo_storage *storage, kodo_metric_page *out, kodo_error *error) {
  (void)storage;
  (void)out;
  (void)error;
  abort();
}

static const kodo_storage_api table = {
    offsetof(kodo_storage_api, list_executions), /* ends before list_executions */
    checked_open,
    stub_close,
    stub_create_schema,
    stub_append,
    stub_read_events,
    stub_get_execution,
    never_list,
    never_archive,
    never_purge,
    never_metrics};
static const kodo_plugin descriptor = {sizeof(kodo_plugin),
                                       KODO_ABI_VERSION_1,
                                       KODO_KIND_STORAGE,
                                       "v1_short_table",
                                       "1.0",
                                       "a version-1 storage with a table shorter than version 1's",
                                       0,
                                       NULL,
                                       0,
                                       &table,
                                       NULL,
                                       NULL};

KODO_EXPORT kodo_status kodo_plugin_entry(uint32_t host_min, uint32_t host_max,
                                          const kodo_host_api *host, const kodo_plugin **plugin_out,
                                          uint32_t *abi_out, kodo_error *error);

KODO_EXPORT kodo_status kodo_plugin_entry(uint32_t host_min, uint32_t host_max,
                                          const kodo_host_api *host, const kodo_plugin **plugin_out,
                                          uint32_t *abi_out, kodo_error *error) {
  (void)error;
  abi_seen_at_entry = host ? host->abi_version : 98u;
  return stub_entry(host_min, host_max, &descriptor, plugin_out, abi_out);
}
