// SupportSet storage: input checks, normalisation, the compact copies, add / remove.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "knnroute/search.hpp"

namespace knnroute {

void check_rows(const float* X, std::size_t n, std::size_t d, const char* what) {
    if (d == 0) throw std::invalid_argument(std::string(what) + " has dimension 0");
    for (std::size_t i = 0; i < n; ++i) {
        const float* x = X + i * d;
        // Branch-free integer tests per row (vectorisable): all exponent bits set means NaN or
        // infinity; a finite row has norm 0 exactly when every value is +-0.
        std::uint32_t nonfinite = 0, nonzero = 0;
        for (std::size_t j = 0; j < d; ++j) {
            std::uint32_t u;
            std::memcpy(&u, x + j, 4);
            nonfinite |= static_cast<std::uint32_t>((u & 0x7f800000u) == 0x7f800000u);
            nonzero |= u & 0x7fffffffu;
        }
        if (nonfinite)
            throw std::invalid_argument(std::string(what) + " row " + std::to_string(i) +
                                        " has a NaN or infinite value; clean or drop that row");
        if (!nonzero)
            throw std::invalid_argument(std::string(what) + " row " + std::to_string(i) +
                                        " is a zero vector, which has no cosine similarity; drop it or re-embed");
    }
}

void normalize_rows(const float* X, std::size_t n, std::size_t d, float* out) {
    for (std::size_t i = 0; i < n; ++i) {
        const float* x = X + i * d;
        double ss = 0.0;
        for (std::size_t j = 0; j < d; ++j) ss += static_cast<double>(x[j]) * x[j];
        const double inv = 1.0 / std::sqrt(ss);
        // Idempotent: a row already unit to float precision is kept bit for bit, so saving and
        // re-loading normalised rows (or normalising twice) never perturbs similarities.
        if (std::fabs(inv - 1.0) < 1e-6) {
            if (out + i * d != x) std::copy(x, x + d, out + i * d);
            continue;
        }
        for (std::size_t j = 0; j < d; ++j) out[i * d + j] = static_cast<float>(x[j] * inv);
    }
}

SupportSet::SupportSet(const float* X, std::size_t n, std::size_t d) : SupportSet(X, n, d, Precision::f32, 0) {}

SupportSet::SupportSet(const float* X, std::size_t n, std::size_t d, Precision precision, int query_threads)
    : n_(n), d_(d), precision_(precision), query_threads_(query_threads < 0 ? 0 : query_threads) {
    if (d == 0) throw std::invalid_argument("embeddings have dimension 0");
    check_rows(X, n, d, "embeddings");
    data_.resize(n * d);
    normalize_rows(X, n, d, data_.data());
    encode_tail(0);
}

void SupportSet::encode_tail(std::size_t from) {
    if (precision_ == Precision::f32) return;
    const std::size_t add = n_ - from;
    err_.resize(n_);
    if (precision_ == Precision::int8) {
        c8_.resize(n_ * d_);
        scale_.resize(n_);
        rowsum_.resize(n_);
        encode_rows(precision_, data_.data() + from * d_, add, d_, nullptr, c8_.data() + from * d_,
                    scale_.data() + from, err_.data() + from);
        for (std::size_t i = from; i < n_; ++i) {
            std::int32_t t = 0;
            for (std::size_t j = 0; j < d_; ++j) t += c8_[i * d_ + j];
            rowsum_[i] = t;
        }
    } else {
        c16_.resize(n_ * d_);
        encode_rows(precision_, data_.data() + from * d_, add, d_, c16_.data() + from * d_, nullptr, nullptr,
                    err_.data() + from);
    }
}

std::size_t SupportSet::memory_bytes() const {
    return data_.size() * sizeof(float) + c16_.size() * 2 + c8_.size() +
           (scale_.size() + err_.size() + rowsum_.size()) * sizeof(float);
}

void SupportSet::add(const float* X, std::size_t n) {
    check_rows(X, n, d_, "new embeddings");
    data_.resize((n_ + n) * d_);
    normalize_rows(X, n, d_, data_.data() + n_ * d_);
    const std::size_t from = n_;
    n_ += n;
    encode_tail(from);
}

void SupportSet::remove(const std::vector<std::int64_t>& rows) {
    std::size_t w = 0, r = 0, next = 0;
    for (; r < n_; ++r) {
        if (next < rows.size() && rows[next] == static_cast<std::int64_t>(r)) {
            ++next;
            continue;
        }
        if (w != r) {
            std::copy(data_.begin() + r * d_, data_.begin() + (r + 1) * d_, data_.begin() + w * d_);
            if (!c16_.empty()) std::copy(c16_.begin() + r * d_, c16_.begin() + (r + 1) * d_, c16_.begin() + w * d_);
            if (!c8_.empty()) std::copy(c8_.begin() + r * d_, c8_.begin() + (r + 1) * d_, c8_.begin() + w * d_);
            if (!scale_.empty()) scale_[w] = scale_[r];
            if (!rowsum_.empty()) rowsum_[w] = rowsum_[r];
            if (!err_.empty()) err_[w] = err_[r];
        }
        ++w;
    }
    n_ = w;
    data_.resize(n_ * d_);
    if (!c16_.empty()) c16_.resize(n_ * d_);
    if (!c8_.empty()) c8_.resize(n_ * d_);
    if (!scale_.empty()) scale_.resize(n_);
    if (!rowsum_.empty()) rowsum_.resize(n_);
    if (!err_.empty()) err_.resize(n_);
}

}  // namespace knnroute
