// reader_bench: one rank streaming the quickstart schema from the Loom log format.
//
//   reader_bench [--rows 10000000] [--small-rows 1000000] [--dir DIR] [--batch 4096]
//                [--shuffle 65536] [--prefetch 8] [--config
//                configs/data/synthetic_quickstart.pbtxt]
//                [--json bench/results/reader_bench.json] [--keep]
//
// 1. Generates (or reuses, when DIR already holds them) two shards of the quickstart schema:
//    `small` (--small-rows) and `large` (--rows), with the synthetic generator.
// 2. Measures the floor in the same run: memcpy bandwidth, turned into samples/s as
//    bandwidth / (file bytes per sample) — the rate at which the shard's bytes could merely
//    be copied once.
// 3. For each shard and mode (shuffled / file order), starts a fresh child process (so its
//    peak RSS is its own) that opens a Reader as rank 0 of 1, reads two epochs of batches,
//    checks them (row count, label sum against the footer, CSR offsets), and reports
//    samples/s per epoch, peak RSS (VmHWM) above its baseline, and the configured memory bound
//    (prefetch_blocks + window blocks + 2) x decoded block bytes + window index + batch.
// Prints a table, writes JSON, exits 1 if a check fails. Timing never goes in tests; this
// program is where the reader's speed is recorded (docs/performance.md, "Reader").
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "csrc/core/logging.h"
#include "csrc/data/reader.h"
#include "csrc/data/schema.h"
#include "csrc/data/shard_file.h"
#include "csrc/data/synthetic.h"
#include "csrc/data/text_input.h"
#include "csrc/data/writer.h"

namespace loom::data {
namespace {

double CpuSeconds() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec * 1e-6;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// VmRSS / VmHWM of this process in bytes.
int64_t ProcStatus(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, n, key) == 0) return std::atoll(line.c_str() + n + 1) * 1024;
  }
  return -1;
}

struct Args {
  int64_t rows = 10'000'000;
  int64_t small_rows = 1'000'000;
  std::string dir;
  int64_t batch = 4096;
  int64_t shuffle = 65536;
  int prefetch = 8;
  std::string config = std::string(LOOM_SOURCE_DIR) + "/configs/data/synthetic_quickstart.pbtxt";
  std::string json = "bench/results/reader_bench.json";
  bool keep = true;
  // Child mode.
  std::string child_file;
};

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (f == "--rows")
      a->rows = std::atoll(next().c_str());
    else if (f == "--small-rows")
      a->small_rows = std::atoll(next().c_str());
    else if (f == "--dir")
      a->dir = next();
    else if (f == "--batch")
      a->batch = std::atoll(next().c_str());
    else if (f == "--shuffle")
      a->shuffle = std::atoll(next().c_str());
    else if (f == "--prefetch")
      a->prefetch = std::atoi(next().c_str());
    else if (f == "--config")
      a->config = next();
    else if (f == "--json")
      a->json = next();
    else if (f == "--no-keep")
      a->keep = false;
    else if (f == "--keep")
      a->keep = true;
    else if (f == "--child")
      a->child_file = next();
    else {
      std::fprintf(stderr, "reader_bench: unknown flag %s (see the header of reader_bench.cc)\n",
                   f.c_str());
      return false;
    }
  }
  if (a->dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    a->dir = std::string(tmp ? tmp : "/tmp") + "/loom_reader_bench";
  }
  return true;
}

// Writes `rows` rows of the synthetic model into one shard (reused if it already exists).
Status EnsureShard(const proto::SyntheticConfig& config, const std::string& path, int64_t rows) {
  {
    auto f = ShardFile::Open(path);
    if (f.ok() && (*f)->rows() == rows) {
      std::printf("reusing %s (%lld rows)\n", path.c_str(), static_cast<long long>(rows));
      return Status::Ok();
    }
  }
  std::printf("generating %s (%lld rows)...\n", path.c_str(), static_cast<long long>(rows));
  std::fflush(stdout);
  const SyntheticModel model(config);
  WriterOptions wo;
  wo.block_rows = config.block_rows();
  wo.producer = "reader_bench";
  LOOM_ASSIGN_OR_RETURN(auto w, ShardWriter::Create(path, model.schema(), wo));
  const int64_t chunk = 16384;
  std::vector<Example> ex(chunk);
  Progress progress("generate", rows, 10.0);
  for (int64_t start = 0; start < rows; start += chunk) {
    const int64_t n = std::min(chunk, rows - start);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < n; ++k) model.Row(start + k, &ex[k]);
    for (int64_t k = 0; k < n; ++k) LOOM_RETURN_IF_ERROR(w->Add(ex[k]));
    progress.Update(start + n, start + n);
  }
  progress.Finish(rows);
  return w->Close();
}

double MemcpyBandwidth() {
  const size_t bytes = size_t{256} << 20;
  std::vector<char> a(bytes, 1), b(bytes, 2);
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = Now();
    std::memcpy(b.data(), a.data(), bytes);
    best = std::min(best, Now() - t0);
    a[rep] = b[bytes - 1 - rep];  // keep the copies observable
  }
  return bytes / best;
}

// Child: read two epochs of `file`, print one line "key=value ...".
int RunChild(const Args& a) {
  const int64_t rss0 = ProcStatus("VmRSS:");
  int64_t block_bytes = 0, block_rows = 0;
  double label_sum = 0;
  int64_t file_rows = 0, file_bytes = 0;
  {
    auto f = ShardFile::Open(a.child_file);
    if (!f.ok()) {
      std::printf("error=%s\n", f.status().ToString().c_str());
      return 1;
    }
    std::string scratch;
    DecodedBlock block;
    if (!(*f)->ReadBlock(0, &scratch, &block).ok()) return 1;
    block_bytes = static_cast<int64_t>(block.MemoryBytes());
    block_rows = block.rows;
    label_sum = (*f)->footer().label_sum();
    file_rows = (*f)->rows();
    file_bytes = static_cast<int64_t>((*f)->file_bytes());
  }
  const int64_t baseline = ProcStatus("VmRSS:");
  ReaderOptions o;
  o.prefetch_blocks = a.prefetch;
  o.shuffle_buffer_rows = a.shuffle;
  o.seed = 1;
  auto reader = Reader::Open({a.child_file}, nullptr, 0, 1, o);
  if (!reader.ok()) {
    std::printf("error=%s\n", reader.status().ToString().c_str());
    return 1;
  }
  Batch batch;
  double seconds[2] = {0, 0}, cpu[2] = {0, 0};
  bool ok = true;
  int64_t batch_bytes = 0;
  for (int epoch = 0; epoch < 2; ++epoch) {
    int64_t rows = 0;
    double labels = 0;
    const double t0 = Now(), c0 = CpuSeconds();
    while ((*reader)->Next(&batch, a.batch)) {
      rows += batch.size;
      for (float y : batch.labels) labels += y;
      for (const auto& c : batch.sequences) {
        ok = ok && c.offsets.size() == static_cast<size_t>(batch.size + 1) &&
             c.offsets.back() == static_cast<int64_t>(c.ids.size());
      }
    }
    seconds[epoch] = Now() - t0;
    cpu[epoch] = CpuSeconds() - c0;
    ok = ok && (*reader)->status().ok() && rows == file_rows && labels == label_sum;
  }
  for (const auto& c : batch.sparse) batch_bytes += (c.ids.capacity() + c.offsets.capacity()) * 8;
  for (const auto& c : batch.sequences)
    batch_bytes += (c.ids.capacity() + c.offsets.capacity()) * 8;
  batch_bytes +=
      (batch.labels.capacity() + batch.dense.capacity()) * 4 + batch.group_ids.capacity() * 8;
  const int64_t hwm = ProcStatus("VmHWM:");
  const int64_t window_blocks = a.shuffle > 0 ? (a.shuffle + block_rows - 1) / block_rows + 1 : 1;
  const int64_t bound =
      (a.prefetch + window_blocks + 2) * block_bytes + (a.shuffle + block_rows) * 8 + batch_bytes;
  std::printf(
      "ok=%d rows=%lld file_bytes=%lld epoch1_s=%.6f epoch2_s=%.6f cpu2_s=%.6f rss0=%lld "
      "baseline=%lld hwm=%lld block_bytes=%lld blocks_alive=%lld bound=%lld\n",
      ok ? 1 : 0, static_cast<long long>(file_rows), static_cast<long long>(file_bytes), seconds[0],
      seconds[1], cpu[1], static_cast<long long>(rss0), static_cast<long long>(baseline),
      static_cast<long long>(hwm), static_cast<long long>(block_bytes),
      static_cast<long long>((*reader)->blocks_alive()), static_cast<long long>(bound));
  return ok ? 0 : 1;
}

struct Result {
  std::string file_label, mode;
  bool ok = false;
  int64_t rows = 0, file_bytes = 0, hwm = 0, baseline = 0, bound = 0, block_bytes = 0,
          blocks_alive = 0;
  double epoch1 = 0, epoch2 = 0, cpu2 = 0;
};

bool RunInChild(const Args& a, const std::string& file, int64_t shuffle, Result* r) {
  std::ostringstream cmd;
  cmd << "/proc/" << getpid() << "/exe --child '" << file << "' --batch " << a.batch
      << " --shuffle " << shuffle << " --prefetch " << a.prefetch << " 2>&1";
  FILE* p = popen(cmd.str().c_str(), "r");
  if (p == nullptr) return false;
  char buf[4096];
  std::string out;
  while (std::fgets(buf, sizeof(buf), p)) out += buf;
  const int rc = pclose(p);
  auto get = [&](const std::string& key) -> std::string {
    const size_t at = out.rfind(key + "=");
    if (at == std::string::npos) return "";
    const size_t end = out.find_first_of(" \n", at);
    return out.substr(at + key.size() + 1, end - at - key.size() - 1);
  };
  r->ok = rc == 0 && get("ok") == "1";
  if (!r->ok) std::fprintf(stderr, "child failed (rc %d): %s\n", rc, out.c_str());
  r->rows = std::atoll(get("rows").c_str());
  r->file_bytes = std::atoll(get("file_bytes").c_str());
  r->epoch1 = std::atof(get("epoch1_s").c_str());
  r->epoch2 = std::atof(get("epoch2_s").c_str());
  r->cpu2 = std::atof(get("cpu2_s").c_str());
  r->hwm = std::atoll(get("hwm").c_str());
  r->baseline = std::atoll(get("baseline").c_str());
  r->bound = std::atoll(get("bound").c_str());
  r->block_bytes = std::atoll(get("block_bytes").c_str());
  r->blocks_alive = std::atoll(get("blocks_alive").c_str());
  return r->ok;
}

int Main(int argc, char** argv) {
  InitLogging(argv[0]);
  Args a;
  if (!ParseArgs(argc, argv, &a)) return 2;
  if (!a.child_file.empty()) return RunChild(a);

  proto::SyntheticConfig config;
  Status s = ReadTextProto(a.config, &config);
  if (!s.ok()) {
    std::fprintf(stderr, "reader_bench: %s\n", s.ToString().c_str());
    return 2;
  }
  std::filesystem::create_directories(a.dir);
  const std::string small = a.dir + "/small.loom", large = a.dir + "/large.loom";
  for (const auto& [path, rows] : {std::pair{small, a.small_rows}, std::pair{large, a.rows}}) {
    s = EnsureShard(config, path, rows);
    if (!s.ok()) {
      std::fprintf(stderr, "reader_bench: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  const double bw = MemcpyBandwidth();
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  double load = 0;
  {
    std::ifstream in("/proc/loadavg");
    in >> load;
  }

  std::vector<Result> results;
  bool all_ok = true;
  for (const auto& [label, path] : {std::pair{"small", small}, std::pair{"large", large}}) {
    for (int64_t shuffle : {a.shuffle, int64_t{0}}) {
      Result r;
      r.file_label = label;
      r.mode = shuffle > 0 ? "shuffle " + std::to_string(shuffle) : "file order";
      all_ok = RunInChild(a, path, shuffle, &r) && all_ok;
      results.push_back(r);
    }
  }

  std::printf(
      "\nreader_bench: quickstart schema, batch %lld, prefetch %d blocks, %ld CPUs "
      "(load average %.1f)\n",
      static_cast<long long>(a.batch), a.prefetch, cpus, load);
  std::printf("floor: memcpy %.2f GB/s\n\n", bw / 1e9);
  std::printf("%-6s %-14s %11s %7s %13s %13s %13s %9s %8s %9s %9s %6s\n", "file", "mode", "rows",
              "B/row", "epoch1 rows/s", "epoch2 rows/s", "rows/CPU-s", "vs floor", "RSS MiB",
              "bound MiB", "file MiB", "check");
  std::ostringstream js;
  js << "{\n  \"benchmark\": \"reader_bench\",\n  \"schema\": \"quickstart\",\n  \"batch\": "
     << a.batch << ",\n  \"prefetch_blocks\": " << a.prefetch << ",\n  \"cpus\": " << cpus
     << ",\n  \"load_average\": " << load << ",\n  \"memcpy_gbps\": " << bw / 1e9
     << ",\n  \"runs\": [\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    const double bpr = r.rows ? static_cast<double>(r.file_bytes) / r.rows : 0;
    const double rate1 = r.epoch1 > 0 ? r.rows / r.epoch1 : 0;
    const double rate2 = r.epoch2 > 0 ? r.rows / r.epoch2 : 0;
    const double floor_rate = bpr > 0 ? bw / bpr : 0;
    const double rss = static_cast<double>(r.hwm - r.baseline);
    const bool within = rss <= r.bound;
    const bool fast = std::max(rate1, rate2) >= 500000;
    const double cpu_rate = r.cpu2 > 0 ? r.rows / r.cpu2 : 0;
    std::printf("%-6s %-14s %11lld %7.1f %13.0f %13.0f %13.0f %8.3fx %8.1f %9.1f %9.1f %6s\n",
                r.file_label.c_str(), r.mode.c_str(), static_cast<long long>(r.rows), bpr, rate1,
                rate2, cpu_rate, floor_rate > 0 ? std::max(rate1, rate2) / floor_rate : 0,
                rss / 1048576.0, r.bound / 1048576.0, r.file_bytes / 1048576.0,
                r.ok && within ? (fast ? "ok" : "SLOW") : "FAIL");
    all_ok = all_ok && within;
    js << "    {\"file\": \"" << r.file_label << "\", \"mode\": \"" << r.mode
       << "\", \"rows\": " << r.rows << ", \"file_bytes\": " << r.file_bytes
       << ", \"epoch1_rows_per_s\": " << rate1 << ", \"epoch2_rows_per_s\": " << rate2
       << ", \"rows_per_cpu_second\": " << cpu_rate << ", \"floor_rows_per_s\": " << floor_rate
       << ", \"rss_above_baseline_bytes\": " << r.hwm - r.baseline
       << ", \"rss_bound_bytes\": " << r.bound << ", \"decoded_block_bytes\": " << r.block_bytes
       << ", \"blocks_alive\": " << r.blocks_alive
       << ", \"checks_ok\": " << (r.ok ? "true" : "false")
       << ", \"within_bound\": " << (within ? "true" : "false") << "}"
       << (i + 1 < results.size() ? "," : "") << "\n";
  }
  js << "  ]\n}\n";
  std::printf(
      "\nrows/CPU-s: epoch 2 rows over the process's CPU time (both threads; robust to "
      "other load). vs floor: best epoch's rows/s over memcpy-bound rows/s (memcpy GB/s / "
      "file bytes per row). RSS: peak above the child's baseline; bound: (prefetch + "
      "window + 2) decoded blocks + window index + batch.\n");
  const std::filesystem::path jp(a.json);
  if (jp.has_parent_path()) std::filesystem::create_directories(jp.parent_path());
  s = WriteStringToFile(a.json, js.str());
  if (!s.ok()) std::fprintf(stderr, "reader_bench: %s\n", s.ToString().c_str());
  std::printf("wrote %s\n", a.json.c_str());
  if (!a.keep) {
    std::filesystem::remove(small);
    std::filesystem::remove(large);
  }
  return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace loom::data

int main(int argc, char** argv) { return loom::data::Main(argc, argv); }
