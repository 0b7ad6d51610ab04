#include "csrc/data/reader.h"

#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include <glog/logging.h>

#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/data/schema.h"

namespace loom::data {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Philox streams of the reader (docs/data-format.md, "Shuffle"): purpose kRngData, kind in bits
// 44..47, a counter (the window's first chunk) in bits 0..43. The key mixes seed and epoch.
constexpr uint64_t kKindChunkOrder = 1;
constexpr uint64_t kKindWindow = 2;
uint64_t ShuffleKey(uint64_t seed, int64_t epoch) {
  return SplitMix64(seed ^ SplitMix64(static_cast<uint64_t>(epoch)));
}
uint64_t ShuffleStream(uint64_t kind, uint64_t counter) {
  return (static_cast<uint64_t>(kRngData) << 48) | (kind << 44) |
         (counter & ((uint64_t{1} << 44) - 1));
}

// Fisher-Yates with 64-bit Philox draws: draw t (t = 0, 1, ...) is lanes (2t mod 4, +1) of
// block t / 2; position i - 1 swaps with floor(draw * i / 2^64).
template <typename T>
void PhiloxShuffle(uint64_t key, uint64_t stream, T* data, size_t n) {
  Philox4x32Result r{};
  for (size_t i = n, t = 0; i > 1; --i, ++t) {
    if ((t & 1) == 0) r = PhiloxBlock(key, stream, t >> 1);
    const uint32_t lo = r.v[(t & 1) * 2], hi = r.v[(t & 1) * 2 + 1];
    const uint64_t u = (static_cast<uint64_t>(hi) << 32) | lo;
    const size_t j = static_cast<size_t>((static_cast<unsigned __int128>(u) * i) >> 64);
    std::swap(data[i - 1], data[j]);
  }
}

}  // namespace

ReaderOptions ReaderOptions::FromConfig(const proto::ReaderConfig& c) {
  ReaderOptions o;
  o.prefetch_blocks = c.prefetch_blocks();
  o.shuffle_buffer_rows = c.shuffle_buffer_rows();
  o.seed = c.seed();
  o.bad_record_policy = c.bad_record_policy();
  o.max_bad_records = c.max_bad_records();
  o.drop_remainder = c.drop_remainder();
  o.even_slices = c.even_slices();
  return o;
}

ReaderOptions ReaderOptions::ForEval() const {
  ReaderOptions o = *this;
  o.shuffle_buffer_rows = 0;
  o.drop_remainder = false;
  o.even_slices = false;
  return o;
}

StatusOr<std::vector<std::string>> ExpandFilePatterns(const std::vector<std::string>& patterns) {
  std::vector<std::string> out;
  for (const std::string& p : patterns) {
    if (p.find_first_of("*?[") == std::string::npos) {
      struct stat st;
      if (::stat(p.c_str(), &st) != 0) return NotFoundError(p + ": no such file");
      out.push_back(p);
      continue;
    }
    glob_t g;
    std::memset(&g, 0, sizeof(g));
    const int rc = ::glob(p.c_str(), 0, nullptr, &g);
    if (rc != 0) {
      globfree(&g);
      return NotFoundError(p + ": the pattern matches no file");
    }
    std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);
    globfree(&g);
    std::sort(matches.begin(), matches.end());
    out.insert(out.end(), matches.begin(), matches.end());
  }
  return out;
}

StatusOr<std::unique_ptr<Reader>> Reader::Open(const std::vector<std::string>& files,
                                               const proto::DataSchema* expected_schema, int rank,
                                               int world_size, const ReaderOptions& options) {
  if (files.empty()) return InvalidArgumentError("reader: no input files");
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return InvalidArgumentError("reader: rank " + std::to_string(rank) + " is not in [0, " +
                                std::to_string(world_size) + ")");
  }
  if (options.prefetch_blocks < 1) {
    return InvalidArgumentError("reader: prefetch_blocks must be >= 1, got " +
                                std::to_string(options.prefetch_blocks));
  }
  if (options.shuffle_buffer_rows < 0 || options.shuffle_buffer_rows >= (int64_t{1} << 31)) {
    return InvalidArgumentError("reader: shuffle_buffer_rows must be in [0, 2^31), got " +
                                std::to_string(options.shuffle_buffer_rows));
  }
  if (options.max_bad_records < 0) {
    return InvalidArgumentError("reader: max_bad_records must be >= 0");
  }
  std::unique_ptr<Reader> r(new Reader());
  r->paths_ = files;
  r->options_ = options;
  r->rank_ = rank;
  r->world_size_ = world_size;
  r->bad_ = BadRecordCounter(options.bad_record_policy, options.max_bad_records);

  if (expected_schema != nullptr) {
    LOOM_RETURN_IF_ERROR(ValidateSchema(*expected_schema));
    r->schema_ = *expected_schema;
  }
  std::string layout;  // fingerprint input
  ShardFile::OpenOptions open_options;
  open_options.salvage = options.bad_record_policy != proto::BAD_RECORDS_FAIL;
  for (size_t i = 0; i < files.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(auto f, ShardFile::Open(files[i], open_options));
    if (f->salvaged()) {
      // Without the footer the block structure is known only up to the damage.
      LOOM_RETURN_IF_ERROR(r->bad_.Add(std::max<int64_t>(f->lost_rows(), 1), f->salvage_report(),
                                       StatusCode::kDataLoss));
    }
    if (i == 0 && expected_schema == nullptr) r->schema_ = f->schema();
    Status s = CheckSameLayout(r->schema_, f->schema());
    if (!s.ok()) {
      return s.WithContext(files[i] + (expected_schema ? ": differs from the expected schema"
                                                       : ": differs from " + files[0]));
    }
    layout += std::to_string(f->num_blocks()) + ":";
    for (int64_t b = 0; b < f->num_blocks(); ++b) layout += std::to_string(f->block_rows(b)) + ",";
    layout += ";";
    r->total_rows_ += f->rows();
    r->files_.push_back(std::move(f));
  }
  {
    proto::DataSchema canon = r->schema_;
    std::string bytes;
    canon.SerializeToString(&bytes);
    r->fingerprint_ = Hash64(layout.data(), layout.size(), Hash64(bytes.data(), bytes.size()));
  }

  // This rank's slice [lo, hi) of the concatenated rows, and its chunks.
  const int64_t n = r->total_rows_;
  int64_t lo, hi;
  if (options.even_slices) {
    const int64_t per = n / world_size;
    lo = per * rank;
    hi = lo + per;
  } else {
    lo = static_cast<int64_t>(static_cast<__int128>(n) * rank / world_size);
    hi = static_cast<int64_t>(static_cast<__int128>(n) * (rank + 1) / world_size);
  }
  r->slice_rows_ = hi - lo;
  int64_t g = 0;
  for (size_t fi = 0; fi < r->files_.size(); ++fi) {
    const ShardFile& f = *r->files_[fi];
    for (int64_t b = 0; b < f.num_blocks(); ++b) {
      const int64_t rows = f.block_rows(b);
      const int64_t begin = std::max(lo, g), end = std::min(hi, g + rows);
      if (begin < end) {
        r->chunks_.push_back(Chunk{static_cast<int32_t>(fi), b, begin - g, end - g});
      }
      g += rows;
    }
  }
  r->order_ = r->EpochOrder(0);
  r->StartProducer(0, 0);
  return r;
}

Reader::~Reader() { StopProducer(); }

int64_t Reader::SliceRows(int r) const {
  const int64_t n = total_rows_;
  if (options_.even_slices) return n / world_size_;
  return static_cast<int64_t>(static_cast<__int128>(n) * (r + 1) / world_size_) -
         static_cast<int64_t>(static_cast<__int128>(n) * r / world_size_);
}

StatusOr<int64_t> Reader::MaxId(const std::string& feature) const {
  if (FindSparse(schema_, feature) < 0 && FindSequence(schema_, feature) < 0) {
    return NotFoundError("no sparse or sequence feature '" + feature + "' in the schema");
  }
  int64_t max_id = -1;
  for (const auto& f : files_) {
    bool found = false;
    for (const auto& st : f->footer().id_stats()) {
      if (st.feature() == feature) {
        max_id = std::max(max_id, st.max_id());
        found = true;
      }
    }
    if (!found && f->rows() > 0) return int64_t{-1};
  }
  return max_id;
}

int64_t Reader::blocks_alive() const {
  std::lock_guard<std::mutex> lock(mu_);
  return blocks_alive_;
}

std::vector<int64_t> Reader::EpochOrder(int64_t epoch) const {
  std::vector<int64_t> order(chunks_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  if (options_.shuffle_buffer_rows > 0) {
    PhiloxShuffle(ShuffleKey(options_.seed, epoch), ShuffleStream(kKindChunkOrder, 0), order.data(),
                  order.size());
  }
  return order;
}

int64_t Reader::WindowEnd(const std::vector<int64_t>& order, int64_t start) const {
  const int64_t n = static_cast<int64_t>(order.size());
  if (start >= n) return n;
  int64_t end = start, rows = 0;
  do {
    const Chunk& c = chunks_[order[end]];
    rows += c.row_end - c.row_begin;
    ++end;
  } while (end < n && rows < options_.shuffle_buffer_rows);
  return end;
}

std::unique_ptr<DecodedBlock> Reader::TakeFromPool() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!pool_.empty()) {
    auto b = std::move(pool_.back());
    pool_.pop_back();
    return b;
  }
  ++blocks_alive_;
  return std::make_unique<DecodedBlock>();
}

void Reader::ReturnToPool(std::unique_ptr<DecodedBlock> block) {
  if (!block) return;
  std::lock_guard<std::mutex> lock(mu_);
  pool_.push_back(std::move(block));
}

void Reader::StartProducer(int64_t epoch, int64_t index) {
  if (chunks_.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }
  producer_ = std::thread([this, epoch, index] { ProducerLoop(epoch, index); });
}

void Reader::StopProducer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (producer_.joinable()) producer_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (Item& item : queue_) {
    if (item.block) pool_.push_back(std::move(item.block));
  }
  queue_.clear();
}

void Reader::ProducerLoop(int64_t epoch, int64_t index) {
  std::vector<int64_t> order = EpochOrder(epoch);
  std::string scratch;
  const int64_t n = static_cast<int64_t>(chunks_.size());
  while (true) {
    if (index == n) {
      ++epoch;
      index = 0;
      order = EpochOrder(epoch);
    }
    const Chunk& c = chunks_[order[index]];
    Item item;
    item.epoch = epoch;
    item.index = index;
    item.block = TakeFromPool();
    item.status = files_[c.file]->ReadBlock(c.block, &scratch, item.block.get());
    if (!item.status.ok()) {
      ReturnToPool(std::move(item.block));
      item.block.reset();
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      return stop_ || static_cast<int64_t>(queue_.size()) < options_.prefetch_blocks;
    });
    if (stop_) {
      if (item.block) pool_.push_back(std::move(item.block));
      return;
    }
    queue_.push_back(std::move(item));
    lock.unlock();
    cv_.notify_all();
    ++index;
  }
}

void Reader::ReleaseWindow() {
  for (WindowChunk& w : window_) ReturnToPool(std::move(w.block));
  window_.clear();
  rows_.clear();
  window_pos_ = 0;
  window_loaded_ = false;
}

Status Reader::LoadWindow(bool count_bad) {
  ReleaseWindow();
  window_end_ = WindowEnd(order_, cursor_);
  for (int64_t i = cursor_; i < window_end_; ++i) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty(); });
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    cv_.notify_all();
    CHECK(item.epoch == epoch_ && item.index == i)
        << "reader: prefetch out of step (got epoch " << item.epoch << " index " << item.index
        << ", expected " << epoch_ << " " << i << ")";
    const int64_t ci = order_[i];
    const Chunk& c = chunks_[ci];
    if (!item.status.ok()) {
      if (count_bad) {
        Status s = bad_.Add(c.row_end - c.row_begin,
                            item.status.message() + " (" + std::to_string(c.row_end - c.row_begin) +
                                " rows of this rank's slice skipped)",
                            StatusCode::kDataLoss);
        if (!s.ok()) {
          window_.push_back(WindowChunk{ci, nullptr});
          window_loaded_ = true;
          return s;
        }
      }
      window_.push_back(WindowChunk{ci, nullptr});
      continue;
    }
    window_.push_back(WindowChunk{ci, std::move(item.block)});
  }
  const size_t nw = window_.size();
  const int nf = schema_.sparse_size(), nk = schema_.sequence_size();
  win_labels_.assign(nw, nullptr);
  win_dense_.assign(nw, nullptr);
  win_groups_.assign(nw, nullptr);
  win_sparse_ids_.assign(nf * nw, nullptr);
  win_sparse_offsets_.assign(nf * nw, nullptr);
  win_sparse_weights_.assign(nf * nw, nullptr);
  win_seq_ids_.assign(nk * nw, nullptr);
  win_seq_offsets_.assign(nk * nw, nullptr);
  for (size_t w = 0; w < nw; ++w) {
    const DecodedBlock* b = window_[w].block.get();
    if (b == nullptr) continue;
    win_labels_[w] = b->labels.data();
    win_dense_[w] = b->dense.data();
    win_groups_[w] = b->group_ids.data();
    for (int f = 0; f < nf; ++f) {
      win_sparse_ids_[f * nw + w] = b->sparse[f].ids.data();
      win_sparse_offsets_[f * nw + w] = b->sparse[f].single ? nullptr : b->sparse[f].offsets.data();
      win_sparse_weights_[f * nw + w] = b->sparse[f].weights.data();
    }
    for (int j = 0; j < nk; ++j) {
      win_seq_ids_[j * nw + w] = b->sequences[j].ids.data();
      win_seq_offsets_[j * nw + w] = b->sequences[j].offsets.data();
    }
  }
  for (size_t w = 0; w < window_.size(); ++w) {
    if (!window_[w].block) continue;
    const Chunk& c = chunks_[window_[w].chunk];
    for (int64_t r = c.row_begin; r < c.row_end; ++r) {
      rows_.push_back(RowRef{static_cast<int32_t>(w), static_cast<int32_t>(r)});
    }
  }
  if (options_.shuffle_buffer_rows > 0) {
    PhiloxShuffle(ShuffleKey(options_.seed, epoch_),
                  ShuffleStream(kKindWindow, static_cast<uint64_t>(cursor_)), rows_.data(),
                  rows_.size());
  }
  window_pos_ = 0;
  window_loaded_ = true;
  return Status::Ok();
}

// Copies rows rows_[from, from + n) of the window into the batch, column by column: each
// pass touches one column of the window's blocks, and outputs are sized once per column.
void Reader::AppendRows(int64_t from, int64_t n, Batch* batch) {
  const RowRef* refs = rows_.data() + from;
  const size_t nw = window_.size();
  const int m = schema_.dense_size();
  const int64_t b0 = batch->size;
  batch->labels.resize(b0 + n);
  float* labels = batch->labels.data() + b0;
  for (int64_t k = 0; k < n; ++k) labels[k] = win_labels_[refs[k].window_chunk][refs[k].row];
  if (HasGroupId(schema_)) {
    batch->group_ids.resize(b0 + n);
    int64_t* groups = batch->group_ids.data() + b0;
    for (int64_t k = 0; k < n; ++k) groups[k] = win_groups_[refs[k].window_chunk][refs[k].row];
  }
  if (m > 0) {
    batch->dense.resize((b0 + n) * m);
    float* dense = batch->dense.data() + b0 * m;
    for (int64_t k = 0; k < n; ++k) {
      std::memcpy(dense + k * m, win_dense_[refs[k].window_chunk] + int64_t{refs[k].row} * m,
                  m * sizeof(float));
    }
  }
  // A variable-length column: lengths first (one resize), then the copies.
  auto append_var = [&](CsrColumn* out, const int64_t* const* ids, const int64_t* const* offsets,
                        const float* const* weights) {
    out->offsets.resize(b0 + n + 1);
    int64_t* o = out->offsets.data() + b0;
    const int64_t base = o[0];
    int64_t total = base;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t* off = offsets[refs[k].window_chunk] + refs[k].row;
      total += off[1] - off[0];
      o[k + 1] = total;
    }
    out->ids.resize(total);
    int64_t* dst = out->ids.data();
    for (int64_t k = 0; k < n; ++k) {
      const int64_t a = offsets[refs[k].window_chunk][refs[k].row];
      std::memcpy(dst + o[k], ids[refs[k].window_chunk] + a, (o[k + 1] - o[k]) * sizeof(int64_t));
    }
    if (weights != nullptr) {
      out->weights.resize(total);
      float* wdst = out->weights.data();
      for (int64_t k = 0; k < n; ++k) {
        const int64_t a = offsets[refs[k].window_chunk][refs[k].row];
        std::memcpy(wdst + o[k], weights[refs[k].window_chunk] + a,
                    (o[k + 1] - o[k]) * sizeof(float));
      }
    }
  };
  for (int f = 0; f < schema_.sparse_size(); ++f) {
    CsrColumn& out = batch->sparse[f];
    const int64_t* const* ids = win_sparse_ids_.data() + f * nw;
    if (!schema_.sparse(f).multi_hot()) {
      const int64_t base = static_cast<int64_t>(out.ids.size());
      out.ids.resize(base + n);
      out.offsets.resize(b0 + n + 1);
      int64_t* dst = out.ids.data() + base;
      int64_t* o = out.offsets.data() + b0 + 1;
      for (int64_t k = 0; k < n; ++k) {
        dst[k] = ids[refs[k].window_chunk][refs[k].row];
        o[k] = base + k + 1;
      }
      continue;
    }
    append_var(&out, ids, win_sparse_offsets_.data() + f * nw,
               schema_.sparse(f).weighted() ? win_sparse_weights_.data() + f * nw : nullptr);
  }
  for (int j = 0; j < schema_.sequence_size(); ++j) {
    append_var(&batch->sequences[j], win_seq_ids_.data() + j * nw, win_seq_offsets_.data() + j * nw,
               nullptr);
  }
  batch->size = b0 + n;
}

bool Reader::Next(Batch* batch, int64_t batch_size) {
  CHECK_GE(batch_size, 1) << "Reader::Next: batch_size must be >= 1";
  batch->Reset(schema_);
  if (!status_.ok()) return false;
  const int64_t num_chunks = static_cast<int64_t>(order_.size());
  while (batch->size < batch_size) {
    if (!window_loaded_ || window_pos_ == static_cast<int64_t>(rows_.size())) {
      if (window_loaded_) {
        cursor_ = window_end_;
        ReleaseWindow();
      }
      if (cursor_ >= num_chunks) break;  // end of the epoch
      Status s = LoadWindow(/*count_bad=*/true);
      if (!s.ok()) {
        status_ = s;
        LOG(ERROR) << "reader stopped: " << s;
        batch->Reset(schema_);
        return false;
      }
      continue;
    }
    const int64_t n = std::min<int64_t>(batch_size - batch->size,
                                        static_cast<int64_t>(rows_.size()) - window_pos_);
    AppendRows(window_pos_, n, batch);
    window_pos_ += n;
    rows_in_epoch_ += n;
  }
  if (batch->size == batch_size) return true;
  if (batch->size > 0 && !options_.drop_remainder) return true;
  // End of the epoch: nothing (more) to return; the next call starts the next epoch.
  ReleaseWindow();
  ++epoch_;
  cursor_ = 0;
  rows_in_epoch_ = 0;
  order_ = EpochOrder(epoch_);
  batch->Reset(schema_);
  return false;
}

proto::ReaderPosition Reader::Position() const {
  proto::ReaderPosition p;
  int64_t cursor = cursor_, offset = window_loaded_ ? window_pos_ : 0;
  if (window_loaded_ && window_pos_ == static_cast<int64_t>(rows_.size())) {
    cursor = window_end_;
    offset = 0;
  }
  p.set_epoch(epoch_);
  p.set_chunk_cursor(cursor);
  p.set_window_offset(offset);
  if (cursor < static_cast<int64_t>(order_.size())) {
    const Chunk& c = chunks_[order_[cursor]];
    p.set_file_index(c.file);
    p.set_block(c.block);
    p.set_record(c.row_begin + (options_.shuffle_buffer_rows == 0 ? offset : 0));
  } else {
    p.set_file_index(static_cast<int32_t>(files_.size()));
    p.set_block(0);
    p.set_record(0);
  }
  p.set_seed(options_.seed);
  p.set_rank(rank_);
  p.set_world_size(world_size_);
  p.set_data_fingerprint(fingerprint_);
  p.set_shuffle_buffer_rows(options_.shuffle_buffer_rows);
  p.set_even_slices(options_.even_slices);
  p.set_bad_records(bad_.count());
  p.set_rows_in_epoch(rows_in_epoch_);
  return p;
}

Status Reader::Seek(const proto::ReaderPosition& p) {
  auto mismatch = [](const std::string& field, const std::string& saved, const std::string& now) {
    return FailedPreconditionError("reader position: " + field + " is " + saved +
                                   " in the position but " + now + " in this reader");
  };
  if (p.rank() != rank_) return mismatch("rank", std::to_string(p.rank()), std::to_string(rank_));
  if (p.world_size() != world_size_) {
    return mismatch("world_size", std::to_string(p.world_size()), std::to_string(world_size_));
  }
  if (p.seed() != options_.seed) {
    return mismatch("seed", std::to_string(p.seed()), std::to_string(options_.seed));
  }
  if (p.shuffle_buffer_rows() != options_.shuffle_buffer_rows) {
    return mismatch("shuffle_buffer_rows", std::to_string(p.shuffle_buffer_rows()),
                    std::to_string(options_.shuffle_buffer_rows));
  }
  if (p.even_slices() != options_.even_slices) {
    return mismatch("even_slices", p.even_slices() ? "true" : "false",
                    options_.even_slices ? "true" : "false");
  }
  if (p.data_fingerprint() != fingerprint_) {
    return FailedPreconditionError(
        "reader position: data_fingerprint differs: the position was taken on other files "
        "(different rows, blocks or schema)");
  }
  const int64_t num_chunks = static_cast<int64_t>(chunks_.size());
  if (p.epoch() < 0 || p.chunk_cursor() < 0 || p.chunk_cursor() > num_chunks ||
      p.window_offset() < 0) {
    return InvalidArgumentError("reader position: epoch/chunk_cursor/window_offset out of range");
  }
  StopProducer();
  ReleaseWindow();
  status_ = Status::Ok();
  epoch_ = p.epoch();
  order_ = EpochOrder(epoch_);
  cursor_ = p.chunk_cursor();
  rows_in_epoch_ = p.rows_in_epoch();
  bad_.set_count(p.bad_records());
  if (cursor_ < num_chunks) {
    StartProducer(epoch_, cursor_);
  } else {
    StartProducer(epoch_ + 1, 0);
  }
  if (p.window_offset() > 0) {
    if (cursor_ >= num_chunks) {
      return InvalidArgumentError("reader position: window_offset > 0 at the end of the epoch");
    }
    LOOM_RETURN_IF_ERROR(LoadWindow(/*count_bad=*/false));
    if (p.window_offset() > static_cast<int64_t>(rows_.size())) {
      return InvalidArgumentError("reader position: window_offset " +
                                  std::to_string(p.window_offset()) + " beyond the window's " +
                                  std::to_string(rows_.size()) + " rows");
    }
    window_pos_ = p.window_offset();
  }
  return Status::Ok();
}

}  // namespace loom::data
