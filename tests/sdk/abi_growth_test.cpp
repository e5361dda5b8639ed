// abi_growth_test.cpp: the ABI grows without breaking anyone. Plugins built from the frozen
// version-1 headers load in today's host with the functions they lack reading as "not
// supported"; today's plugins agree on version 1 with a host that offers only that; the
// SDK negotiates the highest common version and reads and writes structs only up to the
// size their maker declared.
#include <kodo/host/durability.hpp>
#include <kodo/host/error.hpp>
#include <kodo/host/plugin_loader.hpp>
#include "core/storage.hpp"
#include "core/transport.hpp"

#include <kodo/plugin.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <type_traits>

namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string v1_plugin(const std::string &name) {
  return std::string(KODO_ABI_V1_PLUGIN_DIR) + "/" + name + ".so";
}
std::string test_plugin(const std::string &name) {
  return std::string(KODO_TEST_PLUGIN_DIR) + "/" + name + ".so";
}

kodo::Event event(const std::string &fid, int64_t seq) {
  kodo::Event e;
  e.fid = fid;
  e.username = "alice";
  e.seq = seq;
  e.timestamp = 1700000000.5 + static_cast<double>(seq);
  e.kind = "stdout";
  e.payload = "line " + std::to_string(seq);
  return e;
}

// ---- Plugins from the frozen version-1 headers ----------------------------------------

TEST(AbiV1Plugins, LoadAndWorkInTodaysHost) {
  const auto plugin = kodo::Plugin::load(v1_plugin("good_memory_storage"), "", KODO_KIND_STORAGE);
  EXPECT_EQ(plugin->abi_version(), 1u);
  EXPECT_EQ(plugin->host_api()->abi_version, 1u) << "the host API carries the agreed version";
  // Its table ends at metrics: what was appended since reads as not supported.
  EXPECT_EQ(plugin->storage_api().interrupt, nullptr);
  EXPECT_EQ(plugin->storage_api().capabilities, nullptr);
  kodo::Storage storage(plugin, {});
  storage.create_schema();
  const std::string fid = "0123456789abcdef01234567";
  storage.append({event(fid, 0), event(fid, 1)});
  kodo::EventQuery query;
  query.fid = fid;
  const auto events = storage.read_events(query);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].payload, "line 1");
  EXPECT_EQ(storage.capabilities(), plugin->capabilities());

  const auto transport =
      kodo::Plugin::load(v1_plugin("good_memory_transport"), "", KODO_KIND_TRANSPORT);
  EXPECT_EQ(transport->abi_version(), 1u);
  EXPECT_EQ(transport->transport_api().interrupt, nullptr);
}

// ---- Plugins from the frozen version-2 headers ----------------------------------------

std::string v2_plugin(const std::string &name) {
  return std::string(KODO_ABI_V2_PLUGIN_DIR) + "/" + name + ".so";
}

TEST(AbiV2Plugins, StorageAndTransportLoadAndWorkInTodaysHost) {
  const auto plugin = kodo::Plugin::load(v2_plugin("good_memory_storage"), "", KODO_KIND_STORAGE);
  EXPECT_EQ(plugin->abi_version(), 2u);
  kodo::Storage storage(plugin, {});
  storage.create_schema();
  const std::string fid = "0123456789abcdef01234568";
  storage.append({event(fid, 0)});
  kodo::EventQuery query;
  query.fid = fid;
  EXPECT_EQ(storage.read_events(query).size(), 1u);
  const auto transport =
      kodo::Plugin::load(v2_plugin("good_memory_transport"), "", KODO_KIND_TRANSPORT);
  EXPECT_EQ(transport->abi_version(), 2u);
}

#ifdef KODO_ABI_V2_TEMPORAL
TEST(AbiV2Plugins, TheDurabilityPluginLoadsAndKeepsItsContract) {
  const auto plugin = kodo::Plugin::load(v2_plugin("temporal_plugin"), "", KODO_KIND_DURABILITY);
  EXPECT_EQ(plugin->abi_version(), 2u);
  EXPECT_EQ(plugin->name(), "temporal");
  const kodo_durability_api &api = plugin->durability_api();
  for (const void *fn :
       {reinterpret_cast<const void *>(api.open), reinterpret_cast<const void *>(api.submit),
        reinterpret_cast<const void *>(api.signal), reinterpret_cast<const void *>(api.describe),
        reinterpret_cast<const void *>(api.start_worker),
        reinterpret_cast<const void *>(api.heartbeat),
        reinterpret_cast<const void *>(api.on_control)})
    EXPECT_NE(fn, nullptr);
  // Opening it goes through the frozen SDK's option and error handling: a server that is not
  // there is named in the error (no Temporal server is needed for this).
  try {
    kodo::Durability durability(plugin, {{"host", "127.0.0.1:1"}, {"connect_timeout_s", "0"}});
    ADD_FAILURE() << "opened without a server";
  } catch (const kodo::Error &e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("temporal at 127.0.0.1:1"));
  }
}
#endif

TEST(AbiV1Plugins, AShortTableReadsAsNotSupported) {
  // The table's struct_size ends before list_executions; the functions past it abort if
  // called, so reading any of them would end this test.
  const auto plugin = kodo::Plugin::load(v1_plugin("v1_short_table"), "", KODO_KIND_STORAGE);
  const kodo_storage_api &api = plugin->storage_api();
  EXPECT_NE(api.get_execution, nullptr);
  EXPECT_EQ(api.list_executions, nullptr);
  EXPECT_EQ(api.archive_execution, nullptr);
  EXPECT_EQ(api.purge, nullptr);
  EXPECT_EQ(api.metrics, nullptr);
  // Its open checks that the host API said 0 during the entry call and 1 afterwards.
  kodo::Storage storage(plugin, {});
  EXPECT_FALSE(storage.get_execution("0123456789abcdef01234567").has_value());
  EXPECT_TRUE(storage.metrics().empty());
  try {
    storage.list_executions("", 0, 10);
    FAIL() << "listing through a table without list_executions";
  } catch (const kodo::Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_NOT_SUPPORTED);
    EXPECT_THAT(e.what(), HasSubstr("cannot list executions"));
  }
}

// ---- Capabilities of an opened handle -------------------------------------------------------

TEST(InstanceCapabilities, AHandleNarrowedByItsOptionsIsHeldToIt) {
  const auto plugin = kodo::Plugin::load(test_plugin("narrows_by_option"), "", KODO_KIND_STORAGE);
  kodo::PluginOptionSources sources;
  sources.command_line = {{"archive", "false"}};
  kodo::Storage storage(plugin, kodo::resolve_plugin_options(*plugin, sources));
  EXPECT_TRUE(plugin->capabilities() & KODO_STORAGE_CAP_ARCHIVE);
  EXPECT_FALSE(storage.has(KODO_STORAGE_CAP_ARCHIVE));
  EXPECT_TRUE(storage.has(KODO_STORAGE_CAP_LIST));
  try {
    storage.archive_execution("0123456789abcdef01234567");
    FAIL() << "archived through a handle that cannot";
  } catch (const kodo::Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_NOT_SUPPORTED);
  }
}

// ---- Today's plugins in an older host ------------------------------------------------------

TEST(AbiNegotiation, TodaysPluginOfferedOnlyVersion1AnswersIt) {
  const auto plugin = kodo::Plugin::load(test_plugin("good_memory_storage"), "", KODO_KIND_STORAGE,
                                         kodo::AbiRange{1, 1});
  EXPECT_EQ(plugin->abi_version(), 1u);
  EXPECT_EQ(plugin->host_api()->abi_version, 1u);
  kodo::Storage storage(plugin, {});
  const std::string fid = "0123456789abcdef01234568";
  storage.append({event(fid, 0)});
  EXPECT_EQ(storage.get_execution(fid)->event_count, 1);
}

TEST(AbiNegotiation, NoCommonVersionNamesBoth) {
  try {
    kodo::Plugin::load(test_plugin("good_memory_storage"), "", KODO_KIND_STORAGE,
                       kodo::AbiRange{KODO_ABI_VERSION + 1, KODO_ABI_VERSION + 3});
    FAIL() << "loaded without a common version";
  } catch (const kodo::Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_ABI_MISMATCH);
    EXPECT_THAT(e.what(),
                AllOf(HasSubstr("implements ABI version " + std::to_string(KODO_ABI_VERSION)),
                      HasSubstr("older than")));
  }
}

// A plugin speaking [plugin_min, 3] (three descriptors), as one built against a header of
// version 3 would.
struct FutureVersions : ::testing::Test {
  const std::array<kodo_plugin, 3> descriptors = kodo::sdk::detail::descriptors<3>(
      kodo_plugin{sizeof(kodo_plugin), 3, KODO_KIND_STORAGE, "future", "1", "", 0, nullptr, 0,
                  nullptr, nullptr, nullptr});
  // The version agreed (0: refused) and the descriptor answered.
  std::pair<uint32_t, const kodo_plugin *> offer(uint32_t host_min, uint32_t host_max,
                                                 uint32_t plugin_min = 1) {
    const kodo_plugin *plugin = nullptr;
    uint32_t abi = 0;
    kodo_error error = KODO_ERROR_INIT;
    const kodo_status status = kodo::sdk::detail::negotiate(host_min, host_max, plugin_min,
                                                            descriptors, &plugin, &abi, &error);
    last_message = error.message ? error.message : "";
    kodo_error_release(&error);
    return {status == KODO_OK ? abi : 0, plugin};
  }
  std::string last_message;
};

TEST_F(FutureVersions, TheHighestCommonVersionWins) {
  EXPECT_EQ(offer(1, 3).first, 3u);
  EXPECT_EQ(offer(1, 9).first, 3u);
  const auto [agreed, descriptor] = offer(1, 2);
  EXPECT_EQ(agreed, 2u) << "an older host gets the plugin at its own newest version";
  ASSERT_NE(descriptor, nullptr);
  EXPECT_EQ(descriptor->abi_version, 2u) << "the descriptor follows the version agreed";
  EXPECT_EQ(offer(1, 1).second->abi_version, 1u);
}

TEST_F(FutureVersions, RefusesWhenTheRangesDoNotMeet) {
  EXPECT_EQ(offer(4, 5).first, 0u);
  EXPECT_THAT(last_message, AllOf(HasSubstr("speaks ABI versions 1..3"), HasSubstr("4..5")));
  EXPECT_EQ(offer(1, 1, 2).first, 0u) << "a plugin needing version 2 refuses a version-1 host";
  EXPECT_EQ(kodo_abi_agree(1, 1, 2, 3), 0u);
  EXPECT_EQ(kodo_abi_agree(2, 5, 1, 3), 3u);
}

// ---- Structs read and written only up to their struct_size ------------------------------------

TEST(StructSizes, ReadSizedZeroesWhatAnOlderStructLacks) {
  kodo_read_request full{};
  std::memset(static_cast<void *>(&full), 0x7f, sizeof full);
  full.struct_size = offsetof(kodo_read_request, kinds);  // an "older" request
  full.fid = "f";
  full.after_seq = 5;
  const kodo_read_request copy = kodo::sdk::read_sized(&full);
  EXPECT_EQ(copy.struct_size, sizeof(kodo_read_request));
  EXPECT_STREQ(copy.fid, "f");
  EXPECT_EQ(copy.after_seq, 5);
  EXPECT_EQ(copy.kinds, nullptr);
  EXPECT_EQ(copy.kind_count, 0u);
  EXPECT_EQ(copy.limit, 0u);
  EXPECT_TRUE(KODO_HAS_FIELD(&full, after_seq));
  EXPECT_FALSE(KODO_HAS_FIELD(&full, kinds));
}

TEST(StructSizes, NothingIsWrittenPastTheCallersSize) {
  struct {
    kodo_error error;
    unsigned char guard[8];
  } small{};
  small.error.struct_size = offsetof(kodo_error, message);  // too small for version 1
  std::memset(small.guard, 0xab, sizeof small.guard);
  kodo::sdk::fill_error(&small.error, KODO_ERR_IO, true, "lost");
  EXPECT_EQ(small.error.code, KODO_OK) << "an error too small for its fields is left alone";
  EXPECT_EQ(small.error.message, nullptr);

  kodo_event_page page{};
  page.struct_size = offsetof(kodo_event_page, release);
  kodo::sdk::EventPageBuilder builder;
  builder.add() = event("0123456789abcdef01234567", 0);
  try {
    builder.finish(&page);
    FAIL() << "a page too small for its fields was filled";
  } catch (const kodo::sdk::Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_INVALID_ARGUMENT);
    EXPECT_THAT(e.what(), HasSubstr("struct_size"));
  }
  EXPECT_EQ(page.events, nullptr);
  EXPECT_EQ(page.release, nullptr);
}

}  // namespace

namespace {

// An option declared by name builds the same spec as one declared in the struct's field
// order.
constexpr kodo_option_spec kByName = kodo::sdk::OptionSpec("url", KODO_OPTION_URL)
                                         .required()
                                         .secret()
                                         .env_name("KODO_URL")
                                         .default_value("redis://localhost")
                                         .description("where");
constexpr kodo_option_spec kInOrder =
    kodo::sdk::option("url", KODO_OPTION_URL, KODO_OPTION_REQUIRED | KODO_OPTION_SECRET,
                      "redis://localhost", "KODO_URL", "where");

bool same(const kodo_option_spec &a, const kodo_option_spec &b) {
  return a.struct_size == b.struct_size && std::string(a.name) == b.name && a.type == b.type &&
         a.flags == b.flags && std::string(a.default_value) == b.default_value &&
         std::string(a.env_name) == b.env_name && std::string(a.description) == b.description;
}

// option() takes kodo_option_spec's fields in their order; the order it took before (default
// and description third and fourth) does not compile, rather than swapping two strings.
static_assert(!std::is_invocable_v<decltype(&kodo::sdk::option), const char *, int32_t,
                                   const char *, const char *, int32_t, const char *>);

TEST(OptionDeclarations, InFieldOrderAndByNameAgree) {
  EXPECT_TRUE(same(kByName, kInOrder));
  EXPECT_EQ(kInOrder.flags, KODO_OPTION_REQUIRED | KODO_OPTION_SECRET);
  EXPECT_STREQ(kInOrder.default_value, "redis://localhost");
  EXPECT_STREQ(kInOrder.env_name, "KODO_URL");
  EXPECT_STREQ(kInOrder.description, "where");
  constexpr kodo_option_spec bare = kodo::sdk::option("dir", KODO_OPTION_PATH);
  EXPECT_EQ(bare.struct_size, sizeof(kodo_option_spec));
  EXPECT_EQ(bare.flags, 0);
  EXPECT_EQ(bare.default_value, nullptr);
  EXPECT_EQ(bare.env_name, nullptr);
  EXPECT_EQ(bare.description, nullptr);
}

// One error type: what the SDK throws, the host catches as kodo::Error, code intact.
TEST(OneErrorType, TheHostCatchesWhatTheSdkThrows) {
  try {
    kodo::sdk::check_name("fid", "../etc");
    FAIL() << "a bad fid passed";
  } catch (const kodo::Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_INVALID_ARGUMENT);
    EXPECT_FALSE(e.retryable());
  }
  const kodo::Error error(KODO_ERR_IO, "refused", true);
  EXPECT_EQ(error.code(), KODO_ERR_IO);
  EXPECT_STREQ(error.what(), "refused");
  EXPECT_TRUE(error.retryable());
  EXPECT_EQ(kodo::Error("refused").code(), KODO_ERR_UNKNOWN);
}

// One type, one argument order on both sides (kodo_error's: code, message, retryable).
static_assert(std::is_same_v<kodo::Error, kodo::sdk::Error>);
static_assert(!std::is_constructible_v<kodo::Error, std::string, kodo_status>);
static_assert(!std::is_constructible_v<kodo::Error, std::string, kodo_status, bool>);

}  // namespace
