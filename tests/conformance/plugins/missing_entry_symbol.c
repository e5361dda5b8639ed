/*
 * missing_entry_symbol.c: defines its entry point but forgets KODO_EXPORT, so with hidden
 * visibility the shared object exports no kodo_plugin_entry. The loader must name the file
 * and the symbol.
 */
#include <kodo/kodo_plugin.h>

kodo_status kodo_plugin_entry(uint32_t host_min, uint32_t host_max, const kodo_host_api *host,
                              const kodo_plugin **plugin_out, uint32_t *abi_out,
                              kodo_error *error) {
  (void)host_min;
  (void)host_max;
  (void)host;
  (void)plugin_out;
  (void)error;
  *abi_out = KODO_ABI_VERSION;
  return KODO_ERR_NOT_SUPPORTED;
}
