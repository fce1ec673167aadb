// Internals shared by the search files (search*.cpp): block sizes, the k check, the re-rank counter.
// Not installed; not part of the core's API.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

namespace knnroute::detail {

// Rows per block of similarities: small enough to stay in L1/L2 between the kernel and the selection.
constexpr std::size_t kRowBlock = 256;
// Single-query compact scans of at most this many rows buffer every approximate similarity (256 KiB)
// and select their candidates in one pass; longer ranges are consumed block by block.
constexpr std::size_t kTwoPassRows = std::size_t{1} << 16;
// Queries per tile on the batch path (each base block is reused from cache by a whole tile).
constexpr std::size_t kQueryTile = 16;
// Below this many queries a batch stays on the calling thread.
constexpr std::size_t kMinParallelBatch = 4;

inline void check_k(std::size_t k, std::size_t n) {
    if (n == 0) throw std::invalid_argument("the support set is empty: add at least one row before searching");
    if (k < 1 || k > n)
        throw std::invalid_argument("k must be in [1, " + std::to_string(n) + "] (the support size), got " +
                                    std::to_string(k));
}

// Sets the value last_rerank_count() reports on this thread (search_one.cpp owns the counter).
void set_last_rerank_count(std::size_t n);

}  // namespace knnroute::detail
