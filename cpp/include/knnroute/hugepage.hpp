// An allocator for the large per-row arrays (the float32 rows and the compact copies): blocks of
// at least kHugeMin bytes are 2 MiB aligned and, on Linux, advised for transparent huge pages
// (madvise(MADV_HUGEPAGE); most distributions default THP to "madvise", so without the advice the
// arrays get 4 KiB pages). The single-query path touches a few hundred scattered rows per query
// (the exact re-rank): with 4 KiB pages each is a TLB miss and a page walk; one 2 MiB
// page covers ~1,300 float32 rows of d = 384. Smaller blocks use the ordinary heap.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace knnroute {

constexpr std::size_t kHugePage = std::size_t{2} << 20;
constexpr std::size_t kHugeMin = std::size_t{2} << 20;

template <class T>
struct HugePageAllocator {
    using value_type = T;
    HugePageAllocator() noexcept = default;
    template <class U>
    HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

    T* allocate(std::size_t n) {
        if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
        const std::size_t bytes = n * sizeof(T);
        void* p = nullptr;
        if (bytes >= kHugeMin) {
            const std::size_t rounded = (bytes + kHugePage - 1) & ~(kHugePage - 1);
            p = std::aligned_alloc(kHugePage, rounded);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
            if (p) madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
        } else {
            p = std::malloc(bytes == 0 ? 1 : bytes);
        }
        if (!p) throw std::bad_alloc();
        return static_cast<T*>(p);
    }
    void deallocate(T* p, std::size_t) noexcept { std::free(p); }
};

template <class T, class U>
bool operator==(const HugePageAllocator<T>&, const HugePageAllocator<U>&) noexcept { return true; }
template <class T, class U>
bool operator!=(const HugePageAllocator<T>&, const HugePageAllocator<U>&) noexcept { return false; }

template <class T>
using HugeVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace knnroute
