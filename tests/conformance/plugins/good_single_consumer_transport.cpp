// good_single_consumer_transport.cpp: a correct transport without GROUPS: a group takes one
// live consumer and refuses a second with KODO_ERR_NOT_SUPPORTED. The kit must pass it,
// running its cases without groups.
#include "memory_transport.hpp"

#include <set>

namespace {

class SingleConsumerTransport : public kodo_test::MemoryTransport {
 public:
  using MemoryTransport::MemoryTransport;

  std::unique_ptr<kodo::sdk::ConsumerBase> open_consumer(const std::string &group,
                                                         const std::string &name) override {
    std::lock_guard<std::mutex> lock(groups_mutex_);
    if (!groups_with_consumer_.insert(group).second)
      throw kodo::sdk::Error(KODO_ERR_NOT_SUPPORTED,
                             "group '" + group + "' already has a consumer (no GROUPS here)");
    return std::make_unique<Member>(MemoryTransport::open_consumer(group, name), *this, group);
  }

 private:
  // A consumer that frees its group's one seat when it leaves.
  class Member : public kodo::sdk::ConsumerBase {
   public:
    Member(std::unique_ptr<kodo::sdk::ConsumerBase> inner, SingleConsumerTransport &owner,
           std::string group)
        : inner_(std::move(inner)), owner_(owner), group_(std::move(group)) {}
    ~Member() override {
      std::lock_guard<std::mutex> lock(owner_.groups_mutex_);
      owner_.groups_with_consumer_.erase(group_);
    }
    void read(size_t max, int32_t block_ms, kodo::sdk::DeliveryBatchBuilder &out) override {
      inner_->read(max, block_ms, out);
    }
    void ack(const uint64_t *ids, size_t count) override { inner_->ack(ids, count); }

   private:
    std::unique_ptr<kodo::sdk::ConsumerBase> inner_;
    SingleConsumerTransport &owner_;
    std::string group_;
  };

  std::mutex groups_mutex_;
  std::set<std::string> groups_with_consumer_;
};

}  // namespace

KODO_TRANSPORT_PLUGIN(SingleConsumerTransport, "good_single_consumer_transport", "1.0",
                      "in-memory transport with one consumer per group",
                      KODO_TRANSPORT_CAP_REDELIVERY | KODO_TRANSPORT_CAP_FINISH,
                      kodo_test::kMemoryTransportOptions, 2)
