/*
 * claims_list_without_function.c: claims KODO_STORAGE_CAP_LIST with list_executions NULL.
 * The loader must refuse it at load, naming the capability and the function, instead of
 * answering 501 when a listing is asked for.
 */
#include "stub_storage.h"

static const kodo_storage_api table = {
    .struct_size = sizeof(kodo_storage_api),
    .open = stub_open,
    .close = stub_close,
    .create_schema = stub_create_schema,
    .append = stub_append,
    .read_events = stub_read_events,
    .get_execution = stub_get_execution,
};
static const kodo_plugin descriptor = {
    .struct_size = sizeof(kodo_plugin),
    .abi_version = KODO_ABI_VERSION_1,
    .kind = KODO_KIND_STORAGE,
    .name = "claims_list_without_function",
    .version = "1.0",
    .description = "claims LIST, lacks list_executions",
    .capabilities = KODO_STORAGE_CAP_LIST,
    .storage = &table,
};

KODO_DEFINE_ENTRY(host_min, host_max, host, plugin_out, abi_out, error) {
  (void)host;
  (void)error;
  return stub_entry(host_min, host_max, &descriptor, plugin_out, abi_out);
}
