// checked.cpp: calls into a plugin's C table that check, on every call, the promises
// kodo_plugin.h makes about errors, pages, batches and events.
#include "conformance.hpp"

namespace kodo::conformance {

const char *status_name(kodo_status status) {
  switch (status) {
    case KODO_OK: return "KODO_OK";
    case KODO_ERR_UNKNOWN: return "KODO_ERR_UNKNOWN";
    case KODO_ERR_INVALID_ARGUMENT: return "KODO_ERR_INVALID_ARGUMENT";
    case KODO_ERR_NOT_FOUND: return "KODO_ERR_NOT_FOUND";
    case KODO_ERR_NOT_SUPPORTED: return "KODO_ERR_NOT_SUPPORTED";
    case KODO_ERR_TIMEOUT: return "KODO_ERR_TIMEOUT";
    case KODO_ERR_UNAVAILABLE: return "KODO_ERR_UNAVAILABLE";
    case KODO_ERR_ABI_MISMATCH: return "KODO_ERR_ABI_MISMATCH";
    case KODO_ERR_IO: return "KODO_ERR_IO";
    case KODO_ERR_INTERNAL: return "KODO_ERR_INTERNAL";
    default: return "an undefined status";
  }
}

std::ostream &operator<<(std::ostream &out, const Outcome &outcome) {
  out << status_name(outcome.status);
  if (outcome.status > KODO_ERR_INTERNAL || outcome.status < KODO_OK) out << " " << outcome.status;
  if (outcome.retryable) out << " (retryable)";
  if (!outcome.message.empty()) out << ": " << outcome.message;
  return out;
}

namespace {

// Turns what a call returned into an Outcome, releasing the error exactly once.
Outcome take_outcome(const char *function, kodo_status status, kodo_error &error) {
  Outcome out;
  out.status = status;
  if (status == KODO_OK) {
    if (error.release || error.code != KODO_OK)
      ADD_FAILURE() << "ABI contract: an error is filled only on failure: " << function
                    << " returned KODO_OK but filled the error ("
                    << (error.message ? error.message : "no message") << ")";
    kodo_error_release(&error);
    return out;
  }
  if (!error.release)
    ADD_FAILURE() << "ABI contract: every error carries its own release: " << function
                  << " failed with " << status_name(status) << " but left release NULL";
  if (!error.message || !*error.message)
    ADD_FAILURE() << "ABI contract: a failed call fills the error's message: " << function
                  << " failed with " << status_name(status) << " and no message";
  else
    out.message = error.message;
  if (error.code != status)
    ADD_FAILURE() << "ABI contract: the error's code is the returned status: " << function
                  << " returned " << status_name(status) << " but error.code is "
                  << status_name(error.code);
  out.retryable = error.retryable != 0;
  kodo_error_release(&error);
  return out;
}

// Checks one event a plugin returned and copies it.
bool take_event(const char *function, const kodo_event *e, Event *out) {
  if (!e) {
    ADD_FAILURE() << "ABI contract: " << function << " returned a NULL event pointer";
    return false;
  }
  bool fine = true;
  if (e->struct_size < sizeof(kodo_event)) {
    ADD_FAILURE() << "ABI contract: every struct starts with its size: " << function
                  << " returned an event with struct_size " << e->struct_size
                  << ", smaller than ABI version 1's " << sizeof(kodo_event);
    fine = false;
  }
  const char *missing = !e->fid        ? "fid"
                        : !e->username ? "username"
                        : !e->kind     ? "kind"
                        : !e->payload  ? "payload"
                                       : nullptr;
  if (missing) {
    ADD_FAILURE() << "ABI contract: strings are NUL-terminated, never NULL: " << function
                  << " returned an event (seq " << e->seq << ") whose " << missing << " is NULL";
    return false;
  }
  if (e->payload[e->payload_len] != '\0') {
    ADD_FAILURE() << "ABI contract: a payload is followed by a NUL: " << function
                  << " returned seq " << e->seq << " of fid " << e->fid
                  << " without a NUL after its " << e->payload_len << " bytes";
    fine = false;
  }
  *out = Event::copy(*e);
  return fine;
}

void take_executions(const char *function, kodo_execution_page &page,
                     std::vector<ExecutionInfo> *out, bool *has_more) {
  if (!page.release)
    ADD_FAILURE() << "ABI contract: every returned page carries its own release: " << function
                  << " returned a page with release NULL";
  if (page.count > 0 && !page.executions)
    ADD_FAILURE() << "ABI contract: " << function << " returned count " << page.count
                  << " but no executions array";
  for (size_t i = 0; page.executions && i < page.count; ++i) {
    const kodo_execution_info *x = page.executions[i];
    if (!x || !x->fid || !x->username || !x->status) {
      ADD_FAILURE() << "ABI contract: strings are NUL-terminated, never NULL: " << function
                    << " returned execution " << i << " with a NULL "
                    << (!x             ? "entry"
                        : !x->fid      ? "fid"
                        : !x->username ? "username"
                                       : "status");
      continue;
    }
    if (out)
      out->push_back(ExecutionInfo{x->fid, x->username, x->status, x->started_at, x->updated_at,
                                   x->event_count, x->last_seq});
  }
  if (has_more) *has_more = page.has_more != 0;
  if (page.release) page.release(&page);
}

// A handle's own answer must stay within the descriptor's capabilities and agree with the
// first handle's (every handle of a run is opened with the same options).
void check_instance_capabilities(uint64_t answered) {
  const uint64_t declared = target().capabilities();
  const int32_t kind = target().kind();
  if (answered & ~declared)
    ADD_FAILURE() << "capabilities contract: a handle claims " << capability_names(kind, answered)
                  << ", beyond what its descriptor declares (" << capability_names(kind, declared)
                  << ")";
  if ((answered & declared) != claimed_capabilities())
    ADD_FAILURE() << "capabilities contract: handles opened with the same options claim "
                  << capability_names(kind, answered & declared) << " and "
                  << capability_names(kind, claimed_capabilities());
}

}  // namespace

// ---- CheckedStorage ------------------------------------------------------------------------

CheckedStorage::CheckedStorage(const OptionList &options)
    : plugin_(target_ptr()), api_(plugin_->storage_api()), options_(options) {
  OptionArray array(options_);
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.open(array.data(), array.size(), plugin_->host_api(), &handle_, &error);
  open_outcome_ = take_outcome("open", status, error);
  if (open_outcome_.ok() && !handle_) {
    ADD_FAILURE() << "ABI contract: open returned KODO_OK but no handle";
    open_outcome_.status = KODO_ERR_INTERNAL;
  }
  if (handle_ && api_.capabilities) check_instance_capabilities(api_.capabilities(handle_));
}

CheckedStorage::~CheckedStorage() {
  if (handle_) api_.close(handle_);
}

Outcome CheckedStorage::create_schema() {
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.create_schema(handle_, &error);
  return take_outcome("create_schema", status, error);
}

Outcome CheckedStorage::append(const std::vector<Event> &events) {
  std::vector<kodo_event> views;
  views.reserve(events.size());
  for (const auto &e : events) views.push_back(e.view());
  std::vector<const kodo_event *> pointers;
  pointers.reserve(views.size());
  for (const auto &v : views) pointers.push_back(&v);
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.append(handle_, pointers.data(), pointers.size(), &error);
  return take_outcome("append", status, error);
}

Outcome CheckedStorage::read_events(const EventQuery &query, std::vector<Event> *events,
                                    bool *has_more) {
  std::vector<const char *> kinds;
  for (const auto &k : query.kinds) kinds.push_back(k.c_str());
  const kodo_read_request request{sizeof(kodo_read_request),
                                  query.fid.c_str(),
                                  query.username.empty() ? nullptr : query.username.c_str(),
                                  query.after_seq,
                                  kinds.empty() ? nullptr : kinds.data(),
                                  kinds.size(),
                                  query.limit};
  kodo_event_page page{};
  page.struct_size = sizeof page;
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.read_events(handle_, &request, &page, &error);
  Outcome out = take_outcome("read_events", status, error);
  if (!out.ok()) {
    if (page.release) page.release(&page);
    return out;
  }
  if (!page.release)
    ADD_FAILURE() << "ABI contract: every returned page carries its own release: "
                     "read_events returned a page with release NULL";
  if (page.count > 0 && !page.events)
    ADD_FAILURE() << "ABI contract: read_events returned count " << page.count
                  << " but no events array";
  if (page.count > query.limit)
    ADD_FAILURE() << "storage contract: read_events returns at most `limit` events: asked for "
                  << query.limit << ", got " << page.count;
  for (size_t i = 0; page.events && i < page.count; ++i) {
    Event event;
    if (take_event("read_events", page.events[i], &event) && events)
      events->push_back(std::move(event));
  }
  if (has_more) *has_more = page.has_more != 0;
  if (page.release) page.release(&page);
  return out;
}

Outcome CheckedStorage::get_execution(const std::string &fid, const std::string &username,
                                      std::vector<ExecutionInfo> *page_out) {
  kodo_execution_page page{};
  page.struct_size = sizeof page;
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.get_execution(
      handle_, fid.c_str(), username.empty() ? nullptr : username.c_str(), &page, &error);
  Outcome out = take_outcome("get_execution", status, error);
  if (!out.ok()) {
    if (page.release) page.release(&page);
    return out;
  }
  take_executions("get_execution", page, page_out, nullptr);
  return out;
}

Outcome CheckedStorage::list_executions(const std::string &username, size_t offset, size_t limit,
                                        std::vector<ExecutionInfo> *page_out, bool *has_more) {
  if (!api_.list_executions) return Outcome{KODO_ERR_NOT_SUPPORTED, false, "NULL in the table"};
  const kodo_list_request request{sizeof(kodo_list_request),
                                  username.empty() ? nullptr : username.c_str(), offset, limit};
  kodo_execution_page page{};
  page.struct_size = sizeof page;
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.list_executions(handle_, &request, &page, &error);
  Outcome out = take_outcome("list_executions", status, error);
  if (!out.ok()) {
    if (page.release) page.release(&page);
    return out;
  }
  if (page.count > limit)
    ADD_FAILURE() << "storage contract: list_executions returns at most `limit` executions: "
                     "asked for "
                  << limit << ", got " << page.count;
  take_executions("list_executions", page, page_out, has_more);
  return out;
}

Outcome CheckedStorage::archive_execution(const std::string &fid, const std::string &username) {
  if (!api_.archive_execution) return Outcome{KODO_ERR_NOT_SUPPORTED, false, "NULL in the table"};
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.archive_execution(
      handle_, fid.c_str(), username.empty() ? nullptr : username.c_str(), &error);
  return take_outcome("archive_execution", status, error);
}

Outcome CheckedStorage::purge(double older_than, int64_t *purged) {
  if (!api_.purge) return Outcome{KODO_ERR_NOT_SUPPORTED, false, "NULL in the table"};
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.purge(handle_, older_than, purged, &error);
  return take_outcome("purge", status, error);
}

// ---- CheckedTransport ----------------------------------------------------------------------

CheckedTransport::CheckedTransport(const OptionList &options)
    : plugin_(target_ptr()), api_(plugin_->transport_api()), options_(options) {
  OptionArray array(options_);
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.open(array.data(), array.size(), plugin_->host_api(), &handle_, &error);
  open_outcome_ = take_outcome("open", status, error);
  if (open_outcome_.ok() && !handle_) {
    ADD_FAILURE() << "ABI contract: open returned KODO_OK but no handle";
    open_outcome_.status = KODO_ERR_INTERNAL;
  }
  if (handle_ && api_.capabilities) check_instance_capabilities(api_.capabilities(handle_));
}

CheckedTransport::~CheckedTransport() {
  if (handle_) api_.close(handle_);
}

Outcome CheckedTransport::publish(const std::vector<Event> &events, int32_t timeout_ms) {
  std::vector<kodo_event> views;
  views.reserve(events.size());
  for (const auto &e : events) views.push_back(e.view());
  std::vector<const kodo_event *> pointers;
  pointers.reserve(views.size());
  for (const auto &v : views) pointers.push_back(&v);
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.publish(handle_, pointers.data(), pointers.size(), timeout_ms, &error);
  return take_outcome("publish", status, error);
}

Outcome CheckedTransport::open_consumer(const std::string &group, const std::string &name,
                                        std::unique_ptr<CheckedConsumer> *consumer) {
  kodo_consumer *raw = nullptr;
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.consumer_open(handle_, group.c_str(), name.c_str(), &raw, &error);
  Outcome out = take_outcome("consumer_open", status, error);
  if (out.ok() && !raw) {
    ADD_FAILURE() << "ABI contract: consumer_open returned KODO_OK but no consumer";
    out.status = KODO_ERR_INTERNAL;
  }
  if (out.ok()) consumer->reset(new CheckedConsumer(plugin_, raw, name));
  return out;
}

Outcome CheckedTransport::finish_execution(const std::string &fid) {
  if (!api_.finish_execution) return Outcome{KODO_ERR_NOT_SUPPORTED, false, "NULL in the table"};
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.finish_execution(handle_, fid.c_str(), &error);
  return take_outcome("finish_execution", status, error);
}

Outcome CheckedConsumer::read(size_t max, int32_t block_ms, std::vector<Delivery> *deliveries) {
  kodo_delivery_batch batch{};
  batch.struct_size = sizeof batch;
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = plugin_->transport_api().read(handle_, max, block_ms, &batch, &error);
  Outcome out = take_outcome("read", status, error);
  if (!out.ok()) {
    if (batch.release) batch.release(&batch);
    return out;
  }
  if (!batch.release)
    ADD_FAILURE() << "ABI contract: every returned batch carries its own release: read by " << name_
                  << " returned a batch with release NULL";
  if (batch.count > max)
    ADD_FAILURE() << "transport contract: read takes at most `max` deliveries: asked for " << max
                  << ", got " << batch.count;
  if (batch.count > 0 && !batch.deliveries)
    ADD_FAILURE() << "ABI contract: read returned count " << batch.count
                  << " but no deliveries array";
  for (size_t i = 0; batch.deliveries && i < batch.count; ++i) {
    const kodo_delivery *d = batch.deliveries[i];
    if (!d || !d->event) {
      ADD_FAILURE() << "ABI contract: read returned delivery " << i << " with a NULL "
                    << (d ? "event" : "entry");
      continue;
    }
    if (d->delivery_count < 1)
      ADD_FAILURE() << "transport contract: delivery_count is 1 on first delivery and more "
                       "when redelivered: got 0 for seq "
                    << d->event->seq;
    Delivery delivery;
    delivery.id = d->delivery_id;
    delivery.count = d->delivery_count;
    if (take_event("read", d->event, &delivery.event) && deliveries)
      deliveries->push_back(std::move(delivery));
  }
  if (batch.release) batch.release(&batch);
  return out;
}

Outcome CheckedConsumer::ack(const std::vector<uint64_t> &delivery_ids) {
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status =
      plugin_->transport_api().ack(handle_, delivery_ids.data(), delivery_ids.size(), &error);
  return take_outcome("ack", status, error);
}

void CheckedConsumer::close() {
  if (handle_) plugin_->transport_api().consumer_close(handle_);
  handle_ = nullptr;
}

}  // namespace kodo::conformance
