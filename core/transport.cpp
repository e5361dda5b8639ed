#include "core/transport.hpp"

#include <kodo/host/error.hpp>

namespace kodo {

Transport::Transport(std::shared_ptr<Plugin> plugin, const OptionList &options)
    : plugin_(std::move(plugin)),
      api_(plugin_->transport_api()),
      handle_(open_plugin_handle<kodo_transport>(*plugin_, options, api_.open)),
      capabilities_(instance_capabilities(*plugin_, api_.capabilities, handle_)),
      interrupter_(std::make_unique<Interrupter>(
          api_.interrupt ? std::function<void()>([this] { api_.interrupt(handle_); }) : nullptr)) {}

Transport::~Transport() {
  interrupter_.reset();
  if (handle_) api_.close(handle_);
}

void Transport::interrupt() {
  interrupter_->interrupt_now();
}

void Transport::publish(const kodo_event *const *events, size_t count, int32_t timeout_ms) {
  if (count == 0) return;
  kodo_error error = KODO_ERROR_INIT;
  const auto deadline = interrupter_->arm(timeout_ms / 1000.0 + grace_s_);
  kodo_status status = api_.publish(handle_, events, count, timeout_ms, &error);
  if (status != KODO_OK)
    throw_plugin_error(
        plugin_->label() + ": publish of " + std::to_string(count) + " events failed", status,
        error);
}

void Transport::publish(const std::vector<Event> &events, int32_t timeout_ms) {
  EventViews views(events);
  publish(views.data(), views.size(), timeout_ms);
}

std::unique_ptr<Consumer> Transport::open_consumer(const std::string &group,
                                                   const std::string &name) {
  kodo_consumer *handle = nullptr;
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.consumer_open(handle_, group.c_str(), name.c_str(), &handle, &error);
  if (status != KODO_OK)
    throw_plugin_error(plugin_->label() + ": cannot join group '" + group + "' as '" + name + "'",
                       status, error);
  return std::unique_ptr<Consumer>(new Consumer(plugin_, handle, name, *interrupter_, grace_s_));
}

void Transport::finish_execution(const std::string &fid) {
  if (!api_.finish_execution || !has(KODO_TRANSPORT_CAP_FINISH)) return;
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = api_.finish_execution(handle_, fid.c_str(), &error);
  if (status != KODO_OK)
    throw_plugin_error(plugin_->label() + ": finish_execution " + fid, status, error);
}

Consumer::~Consumer() {
  if (handle_) plugin_->transport_api().consumer_close(handle_);
}

void Consumer::read(size_t max, int32_t block_ms, DeliveryBatch &batch) {
  batch.reset();
  kodo_error error = KODO_ERROR_INIT;
  const auto deadline = interrupter_.arm(block_ms / 1000.0 + grace_s_);
  kodo_status status = plugin_->transport_api().read(handle_, max, block_ms, batch.raw(), &error);
  if (status != KODO_OK)
    throw_plugin_error(plugin_->label() + ": read by consumer '" + name_ + "' failed", status,
                       error);
}

void Consumer::ack(const uint64_t *ids, size_t count) {
  if (count == 0) return;
  kodo_error error = KODO_ERROR_INIT;
  const auto deadline = interrupter_.arm(grace_s_);
  kodo_status status = plugin_->transport_api().ack(handle_, ids, count, &error);
  if (status != KODO_OK)
    throw_plugin_error(plugin_->label() + ": ack of " + std::to_string(count) +
                           " deliveries by consumer '" + name_ + "' failed",
                       status, error);
}

std::vector<PluginMetric> Transport::metrics() const {
  return collect_plugin_metrics(api_.metrics, handle_);
}

bool Transport::up() const {
  return reports_up(metrics());  // one sample per consumer, in some plugins: all must be up
}

}  // namespace kodo
