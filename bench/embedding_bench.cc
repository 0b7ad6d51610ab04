// Embedding forward and backward+update throughput on the CPU, against this machine's memcpy
// bandwidth measured in the same run.
//
//   mpirun -np 1 embedding_bench [--batch 2048] [--rows 1000000] [--dim 64] [--reps 10]
//                                [--json bench/results/embedding_bench_np1.json]
//   mpirun -np 2 embedding_bench ...
//
// Two tables of rows x dim (row-wise Adagrad), ids drawn from Zipf(1.05) over the rows:
//   user_bag   MULTI_HOT, SUM, 1..2*hot-1 ids per sample (mean hot)    on "users"
//   item_bag   MULTI_HOT, MEAN, 1..2*hot-1 ids                        on "items"
//   item_seq   SEQUENCE, T ids per sample (T = seq)                     on "items" (shared)
// Both tables are sharded row-wise over all ranks (an override; cyclic rows, so the hot low
// ids spread over the ranks); every rank has its own local batch. On a machine with fewer
// cores than ranks x threads, pass -x OMPI_MCA_mpi_yield_when_idle=1 to mpirun, or ranks
// waiting in a collective spin and steal the CPU of the rank they wait for.
//
// Bytes counted (per rank). The headline ("needed") counts each byte the step must move once:
//   forward   distinct rows this rank requested * D * 4 (read) + ids and offsets * 8 (read)
//             + output floats * 4 (written: pooled, sequences, masks)
//   backward  output-gradient floats * 4 (read) + touched rows owned here * (D * 4 * 2 weights
//             read + written, + 4 * 2 row-wise state)
//   memcpy    2 * size (read + written) of a 64 MiB copy, timed right before every step;
//             the "of memcpy" column is the median over steps of step GB/s / that copy's GB/s
// so "achieved GB/s" and memcpy GB/s count the same kind of traffic. A second line per phase
// gives the logical traffic, the way FBGEMM reports TBE bandwidth (every item's row slice, or
// output-gradient slice, counted again: items * D * 4 instead of distinct rows * D * 4 or the
// gradient once), which Zipf's duplicates inflate ~3x on the row side; earlier reports
// (docs/performance.md) used it. The stage breakdown is printed twice: wall ms, and process
// CPU ms (all threads), which descheduling on a shared machine does not inflate.
//
// On one rank the collection defers the dedup to the backward (DefersDedup: the forward reads
// rows in place); it is timed there, and a "forward + dedup" row gives the forward as it was
// counted before commit f9e9c05 (earlier reports), the dedup then counted in both phases.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <mpi.h>
#include <omp.h>

#include "csrc/comm/mpi_communicator.h"
#include "csrc/core/allocator.h"
#include "csrc/core/logging.h"
#include "csrc/embedding/embedding_collection.h"

namespace {

using loom::embedding::EmbeddingBatch;
using loom::embedding::EmbeddingCollection;
using loom::embedding::EmbeddingGrads;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU seconds of all threads of this process.
double CpuNow() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Zipf(s) over [0, n): inverse CDF by binary search in a precomputed table.
class Zipf {
 public:
  Zipf(int64_t n, double s) : cdf_(n) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      sum += 1.0 / std::pow(static_cast<double>(i + 1), s);
      cdf_[i] = sum;
    }
    for (double& c : cdf_) c /= sum;
  }
  int64_t operator()(std::mt19937_64& rng) const {
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    return std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin();
  }

 private:
  std::vector<double> cdf_;
};

// One timed copy of `bytes` from a to b, split over the OpenMP threads as the kernels are;
// returns traffic GB/s (read + written).
double MemcpyOnce(const char* a, char* b, size_t bytes) {
  const double t0 = Now();
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const size_t lo = bytes * t / nt, hi = bytes * (t + 1) / nt;
    std::memcpy(b + lo, a + lo, hi - lo);
  }
  return 2.0 * static_cast<double>(bytes) / (Now() - t0) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      printf(
          "embedding_bench (CPU only): forward and backward+update GB/s against memcpy.\n"
          "  mpirun -np R embedding_bench [--batch 2048] [--rows 1000000] [--dim 64] [--hot 10]\n"
          "                               [--seq 32] [--reps 10] [--json PATH]\n");
      return 0;
    }
  }
  MPI_Init(&argc, &argv);
  loom::InitLogging(argv[0]);
  int64_t batch = 2048, rows = 1000000, reps = 10;
  int dim = 64, hot = 10, seq = 32;
  std::string json;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--batch")
      batch = std::stoll(argv[i + 1]);
    else if (k == "--rows")
      rows = std::stoll(argv[i + 1]);
    else if (k == "--dim")
      dim = std::stoi(argv[i + 1]);
    else if (k == "--reps")
      reps = std::stoll(argv[i + 1]);
    else if (k == "--hot")
      hot = std::stoi(argv[i + 1]);
    else if (k == "--seq")
      seq = std::stoi(argv[i + 1]);
    else if (k == "--json")
      json = argv[i + 1];
  }
  int rank_int = 0;
  {
    auto comm_or = loom::comm::MpiCommunicator::Create(MPI_COMM_WORLD);
    LOOM_CHECK_OK(comm_or.status());
    std::unique_ptr<loom::comm::MpiCommunicator> comm = std::move(comm_or).value();
    const int R = comm->size(), rank = comm->rank();
    rank_int = rank;
    loom::SetLogRank(rank, R);
    if (json.empty()) json = "bench/results/embedding_bench_np" + std::to_string(R) + ".json";

    loom::proto::EmbeddingConfig config;
    for (const char* name : {"users", "items"}) {
      auto* t = config.add_tables();
      t->set_name(name);
      t->set_num_rows(rows);
      t->set_dim(dim);
      t->mutable_optimizer()->set_type(loom::proto::SparseOptimizerConfig::ROWWISE_ADAGRAD);
    }
    auto add_feature = [&](const char* name, const char* table, int kind, int pooling, int max) {
      auto* f = config.add_features();
      f->set_name(name);
      f->set_table(table);
      f->set_kind(static_cast<loom::proto::EmbeddingFeatureConfig::Kind>(kind));
      f->set_pooling(static_cast<loom::proto::EmbeddingFeatureConfig::Pooling>(pooling));
      if (kind == 1) f->set_max_ids_per_sample(max);
      if (kind == 2) f->set_max_length(max);
    };
    add_feature("user_bag", "users", 1, 0, 2 * hot - 1);
    add_feature("item_bag", "items", 1, 1, 2 * hot - 1);
    add_feature("item_seq", "items", 2, 0, seq);
    config.set_data_parallel_max_bytes(0);
    for (const char* name : {"users", "items"}) {  // row-wise over all ranks (cyclic rows)
      auto* o = config.add_sharding_overrides();
      o->set_table(name);
      o->set_strategy(loom::proto::ShardingOverride::ROW_WISE);
    }

    loom::embedding::CollectionOptions options;
    options.batch_size = batch;
    auto created = EmbeddingCollection::Create(config, comm.get(), options);
    LOOM_CHECK_OK(created.status());
    std::unique_ptr<EmbeddingCollection> emb = std::move(created).value();

    // Batches: a few distinct ones, reused round-robin.
    const Zipf zipf(rows, 1.05);
    std::mt19937_64 rng(1234 + rank);
    const int kBatches = 4;
    std::vector<std::vector<loom::Tensor>> storage(kBatches);
    std::vector<EmbeddingBatch> batches(kBatches);
    int64_t ids_per_batch = 0;
    for (int k = 0; k < kBatches; ++k) {
      batches[k].batch_size = batch;
      for (int f = 0; f < 3; ++f) {
        std::vector<int64_t> ids, off = {0};
        for (int64_t b = 0; b < batch; ++b) {
          const int len = f == 2 ? seq : 1 + static_cast<int>(rng() % (2 * hot - 1));
          for (int i = 0; i < len; ++i) ids.push_back(zipf(rng));
          off.push_back(static_cast<int64_t>(ids.size()));
        }
        if (k == 0) ids_per_batch += static_cast<int64_t>(ids.size());
        storage[k].push_back(
            loom::Tensor::FromVector(ids, loom::Shape{static_cast<int64_t>(ids.size())}));
        storage[k].push_back(loom::Tensor::FromVector(off, loom::Shape{batch + 1}));
        batches[k].features.push_back(
            {storage[k][2 * f].cview(), storage[k][2 * f + 1].cview(), loom::ConstTensorView()});
      }
    }
    // Gradients: the shapes of the outputs, small values.
    std::vector<float> gp(batch * 2 * dim), gs(batch * seq * dim);
    for (size_t i = 0; i < gp.size(); ++i) gp[i] = 1e-3f * static_cast<float>((i * 7) % 13) - 6e-3f;
    for (size_t i = 0; i < gs.size(); ++i) gs[i] = 1e-3f * static_cast<float>((i * 5) % 11) - 5e-3f;
    loom::Tensor tgp = loom::Tensor::FromVector(gp, loom::Shape{batch, 2, int64_t{dim}});
    loom::Tensor tgs = loom::Tensor::FromVector(gs, loom::Shape{batch, int64_t{seq}, int64_t{dim}});
    EmbeddingGrads grads;
    grads.pooled = tgp.cview();
    grads.sequences = {tgs.cview()};

    // The floor: a 64 MiB memcpy timed right before every measured step (the machine is
    // shared, so the floor is sampled as often as the step and ratios are taken per step).
    const size_t copy_bytes = size_t{64} << 20;
    char* copy_a = static_cast<char*>(loom::HostAlloc(copy_bytes));
    char* copy_b = static_cast<char*>(loom::HostAlloc(copy_bytes));
    std::memset(copy_a, 1, copy_bytes);
    std::memset(copy_b, 2, copy_bytes);
    std::vector<double> copy_gbps;
    // Warm-up, then timed steps.
    for (int k = 0; k < 2; ++k) {
      emb->Forward(batches[k % kBatches]);
      emb->Backward(grads, 0.0f);
    }
    std::vector<double> tf, tb;
    const char* kStages[] = {"bucketize",
                             "dedup",
                             "exchange counts",
                             "exchange ids",
                             "lookup",
                             "exchange vectors",
                             "pool",
                             "pack gradients",
                             "exchange gradients",
                             "merge",
                             "reduce (+update if fused)",
                             "exchange row sums",
                             "update"};
    enum {
      kBucketize,
      kDedup,
      kCounts,
      kIds,
      kLookup,
      kVectors,
      kPool,
      kPack,
      kGradients,
      kMerge,
      kReduce,
      kRowSums,
      kUpdate,
      kNumStages
    };
    std::vector<std::vector<double>> stage_times(kNumStages), stage_cpu(kNumStages);
    // One rank: the forward pools in place and the dedup runs at the start of the backward
    // (EmbeddingCollection::DefersDedup); it is timed there, under "dedup".
    const bool defer = emb->DefersDedup();
    std::vector<double> t_dedup;
    double items = 0, touched = 0, requested = 0;
    for (int64_t r = 0; r < reps; ++r) {
      const EmbeddingBatch& bt = batches[r % kBatches];
      int64_t n = 0, u = 0;
      double t_stage = 0, c_stage = 0;
      auto lap = [&](int stage) {
        const double t = Now(), c = CpuNow();
        stage_cpu[stage].push_back(c - c_stage);
        stage_times[stage].push_back(t - t_stage);
        t_stage = t;
        c_stage = c;
      };
      comm->Barrier();
      copy_gbps.push_back(MemcpyOnce(copy_a, copy_b, copy_bytes));
      comm->Barrier();
      double t0 = Now();
      t_stage = t0;
      c_stage = CpuNow();
      n = emb->StageBucketize(bt);
      lap(kBucketize);
      if (!defer) {
        emb->StageDedup();
        lap(kDedup);
        emb->StageExchangeCounts();
        lap(kCounts);
        emb->StageExchangeIds();
        lap(kIds);
        emb->StageLookup();
        lap(kLookup);
        emb->StageExchangeVectors();
        lap(kVectors);
      }
      emb->StagePool();
      lap(kPool);
      tf.push_back(Now() - t0);
      comm->Barrier();
      t0 = Now();
      t_stage = t0;
      c_stage = CpuNow();
      if (defer) {
        emb->StageDedup();
        lap(kDedup);
        t_dedup.push_back(stage_times[kDedup].back());
      }
      for (int g = 0; g <= R; ++g) requested += static_cast<double>(emb->unique_count(g));
      emb->StagePackGradients(grads, 1e-3f);
      lap(kPack);
      emb->StageExchangeGradients();
      lap(kGradients);
      u = emb->StageMerge();
      lap(kMerge);
      emb->StageReduce();
      lap(kReduce);
      emb->StageExchangeRowSums();
      lap(kRowSums);
      emb->StageUpdate(1e-3f);
      lap(kUpdate);
      tb.push_back(Now() - t0);
      items += static_cast<double>(n);
      touched += static_cast<double>(u);
    }
    items /= static_cast<double>(reps);
    touched /= static_cast<double>(reps);
    requested /= static_cast<double>(reps);
    const double out_floats = static_cast<double>(batch) * (2 * dim + seq * dim + seq);
    const double grad_floats = static_cast<double>(batch) * (2 * dim + seq * dim);
    const double id_words = static_cast<double>(ids_per_batch) + 3.0 * (batch + 1);
    // Needed bytes (the headline) and logical bytes (FBGEMM's convention), see the top.
    const double fwd_bytes = requested * dim * 4 + id_words * 8 + out_floats * 4;
    const double bwd_bytes = grad_floats * 4 + touched * (dim * 4 * 2 + 8);
    const double fwd_logical = items * dim * 4 + out_floats * 4;
    const double bwd_logical = items * dim * 4 + touched * (dim * 4 * 2 + 8);
    const double f_s = Median(tf), b_s = Median(tb);
    const double f_gbps = fwd_bytes / f_s / 1e9, b_gbps = bwd_bytes / b_s / 1e9;
    const double memcpy_gbps = Median(copy_gbps);
    std::vector<double> f_ratio, b_ratio, fl_ratio, bl_ratio;
    for (size_t k = 0; k < tf.size(); ++k) {
      f_ratio.push_back(fwd_bytes / tf[k] / 1e9 / copy_gbps[k]);
      b_ratio.push_back(bwd_bytes / tb[k] / 1e9 / copy_gbps[k]);
      fl_ratio.push_back(fwd_logical / tf[k] / 1e9 / copy_gbps[k]);
      bl_ratio.push_back(bwd_logical / tb[k] / 1e9 / copy_gbps[k]);
    }
    // One rank: the forward as it was before the dedup moved to the backward (forward + dedup),
    // for comparison with earlier reports; the dedup is then in both rows.
    std::vector<double> fd_ratio, tfd;
    for (size_t k = 0; k < t_dedup.size(); ++k) {
      tfd.push_back(tf[k] + t_dedup[k]);
      fd_ratio.push_back(fwd_bytes / tfd.back() / 1e9 / copy_gbps[k]);
    }
    const double f_frac = Median(f_ratio), b_frac = Median(b_ratio);
    const double fl_frac = Median(fl_ratio), bl_frac = Median(bl_ratio);
    loom::HostFree(copy_a);
    loom::HostFree(copy_b);
    // Rank 0 prints; every rank's numbers are similar (same sizes, balanced plan).
    if (rank == 0) {
      printf(
          "embedding_bench: R=%d ranks, %d OpenMP threads/rank, B=%lld/rank, 2 tables %lld x %d "
          "(row-wise Adagrad), Zipf(1.05), mean hotness %d, T=%d, %.0f items/step/rank, "
          "%.0f ids/batch, %.0f distinct rows requested/step, %.0f touched rows/step on rank 0\n",
          R, omp_get_max_threads(), static_cast<long long>(batch), static_cast<long long>(rows),
          dim, hot, seq, items, static_cast<double>(ids_per_batch), requested, touched);
      double load[3] = {0, 0, 0};
      if (getloadavg(load, 3) == 3)
        printf("load average %.2f %.2f %.2f\n", load[0], load[1], load[2]);
      printf("%-22s %10s %14s %10s %14s\n", "phase", "ms (med)", "Mitems/s", "GB/s",
             "of memcpy (*)");
      printf("%-22s %10s %14s %10.2f %13.0f%%\n", "memcpy (64 MiB)", "-", "-", memcpy_gbps, 100.0);
      printf("%-22s %10.2f %14.2f %10.2f %13.1f%%\n", "forward lookup", f_s * 1e3,
             items / f_s / 1e6, f_gbps, 100.0 * f_frac);
      printf("%-22s %10.2f %14.2f %10.2f %13.1f%%\n", "backward + update", b_s * 1e3,
             items / b_s / 1e6, b_gbps, 100.0 * b_frac);
      printf("%-22s %10.2f %14.2f %10.2f %13.1f%%\n", "  forward (logical)", f_s * 1e3,
             items / f_s / 1e6, fwd_logical / f_s / 1e9, 100.0 * fl_frac);
      printf("%-22s %10.2f %14.2f %10.2f %13.1f%%\n", "  backward (logical)", b_s * 1e3,
             items / b_s / 1e6, bwd_logical / b_s / 1e9, 100.0 * bl_frac);
      if (defer) {
        const double fd_s = Median(tfd);
        printf("%-22s %10.2f %14.2f %10.2f %13.1f%%\n", "  forward + dedup", fd_s * 1e3,
               items / fd_s / 1e6, fwd_bytes / fd_s / 1e9, 100.0 * Median(fd_ratio));
      }
      printf("(*) median over the steps of (step GB/s / memcpy GB/s measured just before it)\n");
      if (defer) {
        printf(
            "one rank: the forward reads rows in place; the dedup runs in the backward "
            "(counted there; \"forward + dedup\" counts it in both)\n");
      }
      // Stages a run skips (the exchanges on one rank) print "-".
      auto print_stages = [&](const char* title, const std::vector<std::vector<double>>& v) {
        printf("%s:", title);
        for (int k = 0; k < kNumStages; ++k) {
          if (v[k].empty()) {
            printf(" %s -", kStages[k]);
          } else {
            printf(" %s %.2f", kStages[k], Median(v[k]) * 1e3);
          }
          printf("%s", k == kNumStages - 1 ? "\n" : ",");
        }
      };
      print_stages("stage breakdown (median ms)", stage_times);
      print_stages("stage breakdown (median process CPU ms, all threads)", stage_cpu);
      const std::filesystem::path jp(json);
      std::error_code ec;  // a directory that cannot be made shows as the open failing below
      if (jp.has_parent_path()) std::filesystem::create_directories(jp.parent_path(), ec);
      std::ofstream out(json);
      if (out) {
        out << "{\"bench\": \"embedding_bench\", \"ranks\": " << R
            << ", \"threads_per_rank\": " << omp_get_max_threads() << ", \"batch\": " << batch
            << ", \"rows\": " << rows << ", \"dim\": " << dim << ", \"hot\": " << hot
            << ", \"seq\": " << seq << ", \"items_per_step\": " << items
            << ", \"touched_rows\": " << touched << ", \"memcpy_gbps\": " << memcpy_gbps
            << ", \"forward_ms\": " << f_s * 1e3 << ", \"forward_gbps\": " << f_gbps
            << ", \"forward_fraction\": " << f_frac << ", \"backward_ms\": " << b_s * 1e3
            << ", \"backward_gbps\": " << b_gbps << ", \"backward_fraction\": " << b_frac
            << ", \"bytes\": \"needed\", \"forward_fraction_logical\": " << fl_frac
            << ", \"backward_fraction_logical\": " << bl_frac
            << ", \"dedup_in_backward\": " << (defer ? "true" : "false")
            << ", \"forward_with_dedup_fraction\": " << (defer ? Median(fd_ratio) : f_frac)
            << ", \"distinct_rows_requested\": " << requested << "}\n";
        printf("wrote %s\n", json.c_str());
      } else {
        printf("could not write %s\n", json.c_str());
      }
    }
  }
  MPI_Finalize();
  (void)rank_int;
  return 0;
}
