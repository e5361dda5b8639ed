/*
 * missing_entry_symbol.c: names its entry point wrongly, so the shared object exports no
 * kodo_plugin_entry. (Forgetting KODO_EXPORT is no longer possible: the header's prototype
 * exports the entry however it is defined.) The loader must name the file and the symbol.
 */
#include <kodo/kodo_plugin.h>

KODO_EXPORT kodo_status kodo_plugin_main(uint32_t host_min, uint32_t host_max,
                                         const kodo_host_api *host, const kodo_plugin **plugin_out,
                                         uint32_t *abi_out, kodo_error *error);

KODO_EXPORT kodo_status kodo_plugin_main(uint32_t host_min, uint32_t host_max,
                                         const kodo_host_api *host, const kodo_plugin **plugin_out,
                                         uint32_t *abi_out, kodo_error *error) {
  (void)host_min;
  (void)host_max;
  (void)host;
  (void)plugin_out;
  (void)error;
  *abi_out = KODO_ABI_VERSION;
  return KODO_ERR_NOT_SUPPORTED;
}
