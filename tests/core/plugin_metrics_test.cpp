// Plugin figures on /metrics: collected through the optional `metrics` function and rendered
// as kodo_<kind>_<name> families, whatever the plugin sends.
#include <gtest/gtest.h>

#include <kodo/host/plugin_loader.hpp>
#include "core/metrics.hpp"
#include "core/transport.hpp"

using namespace kodo;

TEST(PluginMetrics, FamiliesAreGroupedAndBadNamesLeftOut) {
  std::vector<PluginMetric> metrics = {
      {"pending", "Unacked entries.", "consumer=\"a\"", KODO_METRIC_GAUGE, 3},
      {"reconnects", "Reconnects.", "", KODO_METRIC_COUNTER, 2},
      {"pending", "Unacked entries.", "consumer=\"b\"", KODO_METRIC_GAUGE, 4.5},
      {"Bad-Name", "x", "", KODO_METRIC_GAUGE, 1},
      {"evil", "x", "a=\"1\"}\nkodo_fake 1", KODO_METRIC_GAUGE, 1},
  };
  std::string out;
  render_plugin_metrics(out, "transport", metrics);
  EXPECT_EQ(out,
            "# HELP kodo_transport_pending Unacked entries.\n"
            "# TYPE kodo_transport_pending gauge\n"
            "kodo_transport_pending{consumer=\"a\"} 3\n"
            "kodo_transport_pending{consumer=\"b\"} 4.5\n"
            "# HELP kodo_transport_reconnects Reconnects.\n"
            "# TYPE kodo_transport_reconnects counter\n"
            "kodo_transport_reconnects 2\n");
}

TEST(PluginMetrics, InprocReportsWhatItHolds) {
  auto plugin = Plugin::load(INPROC_PLUGIN, "", KODO_KIND_TRANSPORT);
  Transport transport(plugin, {});
  Event e;
  e.fid = "f1";
  e.username = "u";
  e.kind = "meta";
  e.seq = 0;
  transport.publish(std::vector<Event>{e}, 1000);
  std::string out;
  render_plugin_metrics(out, "transport", transport.metrics());
  EXPECT_NE(out.find("kodo_transport_held_events 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("kodo_transport_capacity_events "), std::string::npos) << out;
}
