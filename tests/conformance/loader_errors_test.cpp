// loader_errors_test.cpp: each plugin that is broken before any contract applies (it does
// not load, or does not open) fails with a message naming the file, the symbol, the
// versions, the function or the kinds involved: what its author needs to fix it.
#include <kodo/host/error.hpp>
#include <kodo/host/plugin_loader.hpp>
#include "core/storage.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string plugin_path(const std::string &name) {
  return std::string(KODO_TEST_PLUGIN_DIR) + "/" + name + ".so";
}

// The kodo::Error loading `path` throws; fails the test when it loads.
kodo::Error load_error(const std::string &path, int32_t expected_kind = 0) {
  try {
    kodo::Plugin::load(path, "", expected_kind);
  } catch (const kodo::Error &e) {
    return e;
  }
  ADD_FAILURE() << path << " loaded, but it should not";
  return kodo::Error("loaded");
}

TEST(LoaderErrors, MissingFileNamesThePath) {
  const std::string path = plugin_path("no_such_plugin");
  const kodo::Error e = load_error(path);
  EXPECT_EQ(e.code(), KODO_ERR_NOT_FOUND);
  EXPECT_THAT(e.what(), AllOf(HasSubstr("not found"), HasSubstr(path)));
}

TEST(LoaderErrors, MissingEntrySymbolNamesFileAndSymbol) {
  const std::string path = plugin_path("missing_entry_symbol");
  const kodo::Error e = load_error(path);
  EXPECT_EQ(e.code(), KODO_ERR_NOT_FOUND);
  EXPECT_THAT(e.what(),
              AllOf(HasSubstr(path), HasSubstr("does not export"), HasSubstr("kodo_plugin_entry")));
}

TEST(LoaderErrors, AbiTooOldNamesBothVersions) {
  const std::string path = plugin_path("abi_too_old");
  const kodo::Error e = load_error(path);
  EXPECT_EQ(e.code(), KODO_ERR_ABI_MISMATCH);
  EXPECT_THAT(e.what(), AllOf(HasSubstr(path), HasSubstr("kodo_plugin_entry"),
                              HasSubstr("ABI version 0"), HasSubstr("older than"),
                              HasSubstr("ABI versions 1.." + std::to_string(KODO_ABI_VERSION))));
}

TEST(LoaderErrors, AbiTooNewNamesBothVersions) {
  const std::string path = plugin_path("abi_too_new");
  const kodo::Error e = load_error(path);
  EXPECT_EQ(e.code(), KODO_ERR_ABI_MISMATCH);
  EXPECT_THAT(e.what(), AllOf(HasSubstr(path), HasSubstr("kodo_plugin_entry"),
                              HasSubstr("ABI version 99"), HasSubstr("newer than"),
                              HasSubstr("ABI versions 1.." + std::to_string(KODO_ABI_VERSION))));
}

TEST(LoaderErrors, EntryFailureCarriesThePluginsMessage) {
  const std::string path = plugin_path("entry_fails");
  const kodo::Error e = load_error(path);
  EXPECT_EQ(e.code(), KODO_ERR_UNAVAILABLE);
  EXPECT_TRUE(e.retryable());
  EXPECT_THAT(e.what(), AllOf(HasSubstr(path), HasSubstr("failed in kodo_plugin_entry"),
                              HasSubstr("license server license.invalid is unreachable")));
}

TEST(LoaderErrors, WrongKindNamesBothKinds) {
  const std::string path = plugin_path("wrong_kind");
  const kodo::Error e = load_error(path, KODO_KIND_STORAGE);
  EXPECT_EQ(e.code(), KODO_ERR_INVALID_ARGUMENT);
  EXPECT_THAT(e.what(),
              AllOf(HasSubstr(path), HasSubstr("is a transport plugin"), HasSubstr("'wrong_kind'"),
                    HasSubstr("a storage plugin was asked for")));
  EXPECT_NO_THROW(kodo::Plugin::load(path, "", KODO_KIND_TRANSPORT))
      << "asked for as what it is, it loads";
}

TEST(LoaderErrors, MissingRequiredFunctionNamesIt) {
  const std::string path = plugin_path("missing_required_function");
  const kodo::Error e = load_error(path);
  EXPECT_EQ(e.code(), KODO_ERR_INVALID_ARGUMENT);
  EXPECT_THAT(e.what(), AllOf(HasSubstr(path), HasSubstr("storage plugin"),
                              HasSubstr("'missing_required_function'"),
                              HasSubstr("lacks the required function append")));
}

TEST(LoaderErrors, ClaimedCapabilityWithoutItsFunctionNamesBoth) {
  const std::string path = plugin_path("claims_list_without_function");
  const kodo::Error e = load_error(path);
  EXPECT_EQ(e.code(), KODO_ERR_INVALID_ARGUMENT);
  EXPECT_THAT(e.what(), AllOf(HasSubstr(path), HasSubstr("claims the capability LIST"),
                              HasSubstr("lacks its function list_executions")));
}

TEST(LoaderErrors, DescriptorOfAnotherVersionThanAgreedNamesBoth) {
  const std::string path = plugin_path("descriptor_version_differs");
  const kodo::Error e = load_error(path);
  EXPECT_EQ(e.code(), KODO_ERR_ABI_MISMATCH);
  EXPECT_THAT(e.what(), AllOf(HasSubstr(path), HasSubstr("agreed on ABI version 1"),
                              HasSubstr("descriptor of version 2")));
}

TEST(OpenErrors, OpenFailureCarriesThePluginsMessage) {
  const auto plugin = kodo::Plugin::load(plugin_path("open_fails"), "", KODO_KIND_STORAGE);
  try {
    kodo::Storage storage(plugin, {});
    FAIL() << "open_fails opened";
  } catch (const kodo::Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_UNAVAILABLE);
    EXPECT_TRUE(e.retryable());
    EXPECT_THAT(e.what(), AllOf(HasSubstr("cannot open storage plugin 'open_fails'"),
                                HasSubstr("database server db.invalid:5432 refused")));
  }
}

// A C++ exception inside a plugin written with the SDK helper reaches the host as
// KODO_ERR_INTERNAL carrying the exception's text, with its own release.
TEST(OpenErrors, ExceptionsBecomeInternalErrors) {
  const auto plugin = kodo::Plugin::load(plugin_path("throws_exception"), "", KODO_KIND_STORAGE);
  kodo::Storage storage(plugin, {});
  storage.create_schema();
  kodo::Event event;
  event.fid = "0123456789abcdef01234567";
  event.username = "alice";
  event.kind = "stdout";
  event.payload = "hello";
  try {
    storage.append({event});
    FAIL() << "append did not fail";
  } catch (const kodo::Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_INTERNAL);
    EXPECT_THAT(e.what(), HasSubstr("simulated failure in append"));
  }

  // The same through the raw table: status, code and message agree, and release works.
  const kodo_storage_api &api = plugin->storage_api();
  kodo_storage *handle = nullptr;
  kodo_error error = KODO_ERROR_INIT;
  ASSERT_EQ(api.open(nullptr, 0, plugin->host_api(), &handle, &error), KODO_OK);
  const kodo_read_request request{
      sizeof(kodo_read_request), event.fid.c_str(), nullptr, -1, nullptr, 0, 10};
  kodo_event_page page{};
  page.struct_size = sizeof page;
  EXPECT_EQ(api.read_events(handle, &request, &page, &error), KODO_ERR_INTERNAL);
  EXPECT_EQ(error.code, KODO_ERR_INTERNAL);
  ASSERT_NE(error.message, nullptr);
  EXPECT_THAT(error.message, HasSubstr("simulated failure in read_events"));
  ASSERT_NE(error.release, nullptr);
  kodo_error_release(&error);
  api.close(handle);
}

}  // namespace
