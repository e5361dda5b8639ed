// plugin_lifetime_test.cpp: leaks and lifetimes at the ABI. Every plugin of the build (the
// real backends in build/plugins and the conformance kit's tiny ones) is loaded and unloaded
// many times; each round opens a handle when the plugin's options can be met, goes through
// the calls that hand memory across (error objects, event and execution pages, delivery
// batches) and closes it. Run under AddressSanitizer (the asan gate) it fails on a leak, a
// double free or a use after free; in every build it checks that what a plugin hands over
// is released by the plugin's own code, which is the ABI's rule ("whoever allocates provides
// the release").
#include <kodo/host/error.hpp>
#include <kodo/host/plugin_loader.hpp>
#include <kodo/host/plugin_options.hpp>
#include "postgres_server.hpp"
#include "redis_server.hpp"

#include <dlfcn.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;

int rounds() {
  const char *text = std::getenv("KODO_LIFETIME_ROUNDS");
  return text ? std::max(1, std::atoi(text)) : 200;
}

// The file that holds the code at `address`, or "" when none does.
std::string file_of(const void *address) {
  Dl_info info{};
  if (!address || !dladdr(address, &info) || !info.dli_fname) return "";
  std::error_code ec;
  return fs::weakly_canonical(info.dli_fname, ec).string();
}

std::string canonical(const std::string &path) {
  std::error_code ec;
  return fs::weakly_canonical(path, ec).string();
}

// Heap-allocated inputs, freed by the test after each call: a plugin that freed or kept one
// would show up under ASan as a double free or a use after free.
struct Inputs {
  std::vector<std::unique_ptr<std::string>> strings;
  const char *keep(const std::string &s) {
    strings.push_back(std::make_unique<std::string>(s));
    return strings.back()->c_str();
  }
};

class Round {
 public:
  Round(const kodo::Plugin &plugin, const std::string &data_dir)
      : plugin_(plugin), path_(canonical(plugin.path())), data_dir_(data_dir) {}

  // A failed call's error: filled with a message and a release of the plugin's own, which
  // is then called once. A plugin that does not fill it (a C test plugin returning a bare
  // status) is allowed; one that fills it without a release must not own the message.
  void check_error(kodo_status status, kodo_error &error, const char *call) {
    if (status == KODO_OK) {
      EXPECT_EQ(error.release, nullptr)
          << path_ << ": " << call << " succeeded but filled an error";
    } else if (error.release) {
      EXPECT_NE(error.message, nullptr) << path_ << ": " << call;
      EXPECT_EQ(file_of(reinterpret_cast<const void *>(error.release)), path_)
          << call << ": the error's release is not the plugin's own code";
    }
    kodo_error_release(&error);
    error = KODO_ERROR_INIT;
  }

  template <class Page>
  void check_page_release(const Page &page, const char *call) {
    if (page.count > 0 || page.private_data) {
      ASSERT_NE(page.release, nullptr)
          << path_ << ": " << call << " returned a page without release";
      EXPECT_EQ(file_of(reinterpret_cast<const void *>(page.release)), path_)
          << call << ": the page's release is not the plugin's own code";
    }
  }

  // A plugin that talks to a server gets a real one of its own, started once per process;
  // "" for one we have no server for, which is then only loaded and unloaded. Never its
  // default URL: that could be somebody's server on this machine.
  std::string server_url() const {
    bool has_url = false;
    for (const auto &spec : plugin_.options())
      has_url = has_url || std::strcmp(spec.name, "url") == 0 ||
                std::strcmp(spec.name, "server") == 0;  // ray's host:port
    if (!has_url) return "-";
    if (plugin_.name() == "postgres") {
      static kodo::testing::PostgresServer server;
      static bool started = (server.start(), true);
      (void)started;
      return server.url();
    }
    if (plugin_.name() == "redis") {
      static kodo::testing::RedisServer server;
      static bool started = (server.start(), true);
      (void)started;
      return server.url();
    }
    return "";
  }

  void run() {
    kodo::PluginOptionSources sources;
    sources.host_defaults = {{"exec_dir", data_dir_}, {"dir", data_dir_}};
    const std::string url = server_url();
    if (url.empty()) return;
    if (url != "-") sources.command_line = {{"url", url}};
    kodo::OptionList values;
    try {
      values = kodo::resolve_plugin_options(plugin_, sources);
    } catch (const kodo::Error &) {
      return;  // a required option we cannot make up (a server URL, a token)
    }
    kodo::OptionArray options(values);
    if (plugin_.kind() == KODO_KIND_STORAGE) storage(options);
    if (plugin_.kind() == KODO_KIND_TRANSPORT) transport(options);
  }

 private:
  // Three events of a new execution, with pointers to them as the ABI takes a batch.
  struct Batch {
    std::vector<kodo_event> events;
    std::vector<const kodo_event *> pointers;
  };
  Batch batch(Inputs &in, const std::string &fid) {
    Batch out;
    for (int i = 0; i < 3; ++i) {
      const char *payload = in.keep("{\"step\": " + std::to_string(i) + "}");
      out.events.push_back(kodo_event{sizeof(kodo_event), in.keep(fid), in.keep("admin"), i,
                                      1.0 + i, in.keep("agent"), payload, std::strlen(payload)});
    }
    for (const auto &e : out.events) out.pointers.push_back(&e);
    return out;
  }
  std::string next_fid() { return "65a0c0ffee0000000000" + std::to_string(1000 + round_++ % 9000); }

  // The storage's or transport's open; the handle, or nullptr when it refused.
  template <class Handle, class Open>
  Handle *open_handle(Open open, const kodo::OptionArray &options) {
    Handle *handle = nullptr;
    kodo_error error = KODO_ERROR_INIT;
    const kodo_status status =
        open(options.data(), options.size(), plugin_.host_api(), &handle, &error);
    check_error(status, error, "open");
    if (status != KODO_OK) return nullptr;
    EXPECT_NE(handle, nullptr) << path_ << ": open succeeded without a handle";
    return handle;
  }

  void storage(const kodo::OptionArray &options) {
    const kodo_storage_api &api = plugin_.storage_api();
    kodo_storage *handle = open_handle<kodo_storage>(api.open, options);
    if (!handle) return;
    kodo_error error = KODO_ERROR_INIT;
    kodo_status status = KODO_OK;
    check_error(api.create_schema(handle, &error), error, "create_schema");

    Inputs in;
    const std::string fid = next_fid();
    Batch events = batch(in, fid);
    check_error(api.append(handle, events.pointers.data(), events.pointers.size(), &error), error,
                "append");
    in.strings.clear();

    kodo_event_page page{};
    page.struct_size = sizeof page;
    const char *unknown = "65a0c0ffee00000000ffffff";
    kodo_read_request unknown_request{
        sizeof(kodo_read_request), unknown, nullptr, -1, nullptr, 0, 10};
    status = api.read_events(handle, &unknown_request, &page, &error);
    if (status == KODO_OK && page.release) page.release(&page);
    page = kodo_event_page{};
    page.struct_size = sizeof page;
    // An error handed back filled: the plugin releases it before filling it again.
    kodo_execution_page missing{};
    missing.struct_size = sizeof missing;
    if (api.get_execution(handle, unknown, nullptr, &missing, &error) == KODO_OK && missing.release)
      missing.release(&missing);
    missing = kodo_execution_page{};
    missing.struct_size = sizeof missing;
    status = api.get_execution(handle, unknown, nullptr, &missing, &error);
    if (status == KODO_OK && missing.release) missing.release(&missing);
    check_error(status, error, "get_execution of an unknown fid");

    kodo_read_request request{sizeof(kodo_read_request), in.keep(fid), nullptr, -1, nullptr, 0, 10};
    status = api.read_events(handle, &request, &page, &error);
    check_error(status, error, "read_events");
    if (status == KODO_OK) check_page_release(page, "read_events");

    kodo_execution_page executions{};
    executions.struct_size = sizeof executions;
    if (api.list_executions && (plugin_.capabilities() & KODO_STORAGE_CAP_LIST)) {
      kodo_list_request list{sizeof(kodo_list_request), nullptr, 0, 5};
      status = api.list_executions(handle, &list, &executions, &error);
      check_error(status, error, "list_executions");
      if (status == KODO_OK) check_page_release(executions, "list_executions");
    }
    if (api.archive_execution && (plugin_.capabilities() & KODO_STORAGE_CAP_ARCHIVE))
      check_error(api.archive_execution(handle, in.keep(fid), nullptr, &error), error,
                  "archive_execution");
    in.strings.clear();

    api.close(handle);
    // "Pages already returned stay valid" after close; they may be released on any thread.
    std::thread([&] {
      size_t bytes = 0;
      for (size_t i = 0; i < page.count; ++i) bytes += std::strlen(page.events[i]->payload);
      for (size_t i = 0; i < executions.count; ++i)
        bytes += std::strlen(executions.executions[i]->fid);
      EXPECT_GE(bytes, 0u);
      if (page.release) page.release(&page);
      if (executions.release) executions.release(&executions);
    }).join();
  }

  void transport(const kodo::OptionArray &options) {
    const kodo_transport_api &api = plugin_.transport_api();
    kodo_transport *handle = open_handle<kodo_transport>(api.open, options);
    if (!handle) return;
    kodo_error error = KODO_ERROR_INIT;
    kodo_status status = KODO_OK;

    Inputs in;
    const std::string fid = next_fid();
    Batch events = batch(in, fid);
    check_error(api.publish(handle, events.pointers.data(), events.pointers.size(), 1000, &error),
                error, "publish");
    // A malformed event: refused with an error the plugin owns and releases.
    events.events[0].fid = in.keep("../escape");
    status = api.publish(handle, events.pointers.data(), 1, 1000, &error);
    check_error(status, error, "publish of a bad fid");
    in.strings.clear();

    kodo_consumer *consumer = nullptr;
    status = api.consumer_open(handle, in.keep("group"), in.keep("one"), &consumer, &error);
    check_error(status, error, "consumer_open");
    in.strings.clear();
    if (status == KODO_OK) {
      kodo_delivery_batch deliveries{};
      deliveries.struct_size = sizeof deliveries;
      status = api.read(consumer, 10, 0, &deliveries, &error);
      check_error(status, error, "read");
      if (status == KODO_OK) {
        check_page_release(deliveries, "read");
        std::vector<uint64_t> ids;
        for (size_t i = 0; i < deliveries.count; ++i)
          ids.push_back(deliveries.deliveries[i]->delivery_id);
        // Released on another thread, as the spooler may.
        std::thread([&] {
          if (deliveries.release) deliveries.release(&deliveries);
        }).join();
        check_error(api.ack(consumer, ids.data(), ids.size(), &error), error, "ack");
      }
      api.consumer_close(consumer);
    }
    if (api.finish_execution && (plugin_.capabilities() & KODO_TRANSPORT_CAP_FINISH))
      check_error(api.finish_execution(handle, fid.c_str(), &error), error, "finish_execution");
    api.close(handle);
  }

  const kodo::Plugin &plugin_;
  std::string path_;
  std::string data_dir_;
  int round_ = 0;
};

std::vector<std::string> every_plugin() {
  std::vector<std::string> paths;
  for (const char *dir : {KODO_PLUGIN_DIR, KODO_TEST_PLUGIN_DIR})
    for (const auto &entry : fs::directory_iterator(dir))
      if (entry.path().extension() == ".so") paths.push_back(entry.path().string());
  std::sort(paths.begin(), paths.end());
  return paths;
}

class PluginLifetime : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kodo-lifetime-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_P(PluginLifetime, LoadsOpensAndUnloadsRepeatedly) {
  const std::string &path = GetParam();
  const int n = rounds();
  int loaded = 0;
  for (int i = 0; i < n && !HasFatalFailure(); ++i) {
    std::shared_ptr<kodo::Plugin> plugin;
    try {
      plugin = kodo::Plugin::load(path, "", 0);
    } catch (const kodo::Error &) {
      continue;  // a plugin broken on purpose: the loader's error path must not leak either
    }
    ++loaded;
    Round(*plugin, dir_).run();
    plugin.reset();  // unloads it
    ASSERT_FALSE(HasFailure()) << path << " failed in round " << i;
  }
  RecordProperty("loaded_rounds", loaded);
}

INSTANTIATE_TEST_SUITE_P(EveryPlugin, PluginLifetime, ::testing::ValuesIn(every_plugin()),
                         [](const ::testing::TestParamInfo<std::string> &param) {
                           std::string name = fs::path(param.param).stem().string();
                           for (char &c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

}  // namespace
