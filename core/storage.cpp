#include "core/storage.hpp"

#include <kodo/host/error.hpp>

namespace kodo {

Storage::Storage(std::shared_ptr<Plugin> plugin, const OptionList &options)
    : plugin_(std::move(plugin)),
      api_(plugin_->storage_api()),
      handle_(open_plugin_handle<kodo_storage>(*plugin_, options, api_.open)),
      capabilities_(instance_capabilities(*plugin_, api_.capabilities, handle_)),
      interrupter_(std::make_unique<Interrupter>(
          api_.interrupt ? std::function<void()>([this] { api_.interrupt(handle_); }) : nullptr)) {}

Storage::~Storage() {
  interrupter_.reset();
  if (handle_) api_.close(handle_);
}

void Storage::interrupt() {
  interrupter_->interrupt_now();
}

void Storage::set_call_timeouts(double append_s, double read_s) {
  append_timeout_s_ = append_s;
  read_timeout_s_ = read_s;
}

void Storage::create_schema() {
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.create_schema(handle_, &error);
  if (status != KODO_OK)
    throw_plugin_error(plugin_->label() + ": create_schema failed", status, error);
}

void Storage::append(const kodo_event *const *events, size_t count) {
  if (count == 0) return;
  kodo_error error = KODO_ERROR_INIT;
  const auto deadline = interrupter_->arm(append_timeout_s_);
  kodo_status status = api_.append(handle_, events, count, &error);
  if (status != KODO_OK)
    throw_plugin_error(plugin_->label() + ": append of " + std::to_string(count) + " events failed",
                       status, error);
}

void Storage::append(const std::vector<Event> &events) {
  EventViews views(events);
  append(views.data(), views.size());
}

std::vector<Event> Storage::read_events(const EventQuery &query, bool *has_more) {
  std::vector<const char *> kinds;
  for (const auto &k : query.kinds) kinds.push_back(k.c_str());
  kodo_read_request request{sizeof(kodo_read_request),
                            query.fid.c_str(),
                            query.username.empty() ? nullptr : query.username.c_str(),
                            query.after_seq,
                            kinds.empty() ? nullptr : kinds.data(),
                            kinds.size(),
                            query.limit};
  kodo_event_page page{};
  page.struct_size = sizeof page;
  kodo_error error = KODO_ERROR_INIT;
  const auto deadline = interrupter_->arm(read_timeout_s_);
  kodo_status status = api_.read_events(handle_, &request, &page, &error);
  if (status != KODO_OK)
    throw_plugin_error("reading events of execution " + query.fid, status, error);
  std::vector<Event> out;
  out.reserve(page.count);
  for (size_t i = 0; i < page.count; ++i) out.push_back(Event::copy(*page.events[i]));
  if (has_more) *has_more = page.has_more != 0;
  if (page.release) page.release(&page);
  return out;
}

static std::vector<ExecutionInfo> take_page(kodo_execution_page &page, bool *has_more) {
  std::vector<ExecutionInfo> out;
  for (size_t i = 0; i < page.count; ++i) {
    const kodo_execution_info &x = *page.executions[i];
    out.push_back(ExecutionInfo{x.fid ? x.fid : "", x.username ? x.username : "",
                                x.status ? x.status : "", x.started_at, x.updated_at, x.event_count,
                                x.last_seq});
  }
  if (has_more) *has_more = page.has_more != 0;
  if (page.release) page.release(&page);
  return out;
}

std::optional<ExecutionInfo> Storage::get_execution(const std::string &fid,
                                                    const std::string &username) {
  kodo_execution_page page{};
  page.struct_size = sizeof page;
  kodo_error error = KODO_ERROR_INIT;
  const auto deadline = interrupter_->arm(read_timeout_s_);
  kodo_status status = api_.get_execution(
      handle_, fid.c_str(), username.empty() ? nullptr : username.c_str(), &page, &error);
  if (status == KODO_ERR_NOT_FOUND) {
    kodo_error_release(&error);
    return std::nullopt;
  }
  if (status != KODO_OK) throw_plugin_error("reading execution " + fid, status, error);
  auto items = take_page(page, nullptr);
  if (items.empty()) return std::nullopt;
  return items.front();
}

std::vector<ExecutionInfo> Storage::list_executions(const std::string &username, size_t offset,
                                                    size_t limit, bool *has_more) {
  if (!api_.list_executions || !has(KODO_STORAGE_CAP_LIST))
    throw Error(KODO_ERR_NOT_SUPPORTED, plugin_->label() + " cannot list executions");
  kodo_list_request request{sizeof(kodo_list_request),
                            username.empty() ? nullptr : username.c_str(), offset, limit};
  kodo_execution_page page{};
  page.struct_size = sizeof page;
  kodo_error error = KODO_ERROR_INIT;
  const auto deadline = interrupter_->arm(read_timeout_s_);
  kodo_status status = api_.list_executions(handle_, &request, &page, &error);
  if (status != KODO_OK) throw_plugin_error("listing executions", status, error);
  return take_page(page, has_more);
}

bool Storage::archive_execution(const std::string &fid, const std::string &username) {
  if (!api_.archive_execution || !has(KODO_STORAGE_CAP_ARCHIVE))
    throw Error(KODO_ERR_NOT_SUPPORTED, plugin_->label() + " cannot archive executions");
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.archive_execution(
      handle_, fid.c_str(), username.empty() ? nullptr : username.c_str(), &error);
  if (status == KODO_ERR_NOT_FOUND) {
    kodo_error_release(&error);
    return false;
  }
  if (status != KODO_OK) throw_plugin_error("archiving execution " + fid, status, error);
  return true;
}

int64_t Storage::purge(double older_than) {
  if (!api_.purge || !has(KODO_STORAGE_CAP_PURGE))
    throw Error(KODO_ERR_NOT_SUPPORTED, plugin_->label() + " cannot purge executions");
  int64_t purged = 0;
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.purge(handle_, older_than, &purged, &error);
  if (status != KODO_OK) throw_plugin_error("purging executions", status, error);
  return purged;
}

std::vector<PluginMetric> Storage::metrics() const {
  return collect_plugin_metrics(api_.metrics, handle_);
}

}  // namespace kodo
