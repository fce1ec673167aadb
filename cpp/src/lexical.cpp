#include "knnroute/lexical.hpp"

#include <cmath>
#include <deque>
#include <unordered_map>
#include <stdexcept>

namespace knnroute {

namespace {

std::uint64_t hash_bytes(const char* p, std::size_t n) {
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a, then a final mix
    for (std::size_t i = 0; i < n; ++i) {
        h ^= static_cast<unsigned char>(p[i]);
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

inline bool word_char(unsigned char c) {  // \w on ASCII (after lowercasing)
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

}  // namespace

LexicalIndex::LexicalIndex(std::vector<std::string> vocabulary, const float* idf, const float* comp_t,
                           std::size_t k)
    : vocab_(std::move(vocabulary)), idf_(idf), comp_t_(comp_t), k_(k) {
    std::size_t cap = 16;
    while (cap < 2 * vocab_.size()) cap <<= 1;
    table_.assign(cap, -1);
    mask_ = cap - 1;
    for (std::size_t i = 0; i < vocab_.size(); ++i) {
        const std::string& t = vocab_[i];
        std::size_t h = hash_bytes(t.data(), t.size()) & mask_;
        while (table_[h] >= 0) {
            if (vocab_[static_cast<std::size_t>(table_[h])] == t) throw std::invalid_argument("duplicate vocabulary term");
            h = (h + 1) & mask_;
        }
        table_[h] = static_cast<std::int32_t>(i);
    }
}

std::int64_t LexicalIndex::find(std::string_view term) const {
    std::size_t h = hash_bytes(term.data(), term.size()) & mask_;
    while (true) {
        const std::int32_t i = table_[h];
        if (i < 0) return -1;
        const std::string& t = vocab_[static_cast<std::size_t>(i)];
        if (t.size() == term.size() && std::string_view(t) == term) return i;
        h = (h + 1) & mask_;
    }
}

bool LexicalIndex::transform(const char* text, std::size_t n, std::size_t max_chars, float* out) const {
    if (n > max_chars) n = max_chars;
    thread_local std::string low;
    thread_local std::vector<std::pair<std::uint32_t, std::uint32_t>> toks;  // (start, length) in low
    thread_local std::vector<std::int32_t> cols, tf, pos;                     // first-occurrence order
    thread_local std::string bigram;
    thread_local std::vector<double> vals, acc;
    low.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if (c >= 0x80) return false;
        low[i] = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    toks.clear();
    for (std::size_t i = 0; i < n;) {
        if (!word_char(static_cast<unsigned char>(low[i]))) { ++i; continue; }
        std::size_t j = i;
        while (j < n && word_char(static_cast<unsigned char>(low[j]))) ++j;
        if (j - i >= 2) toks.emplace_back(static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(j - i));
        i = j;
    }
    if (pos.size() < vocab_.size()) pos.assign(vocab_.size(), -1);
    cols.clear();
    tf.clear();
    auto count = [&](std::int64_t c) {
        if (c < 0) return;
        std::int32_t& p = pos[static_cast<std::size_t>(c)];
        if (p < 0) {
            p = static_cast<std::int32_t>(cols.size());
            cols.push_back(static_cast<std::int32_t>(c));
            tf.push_back(1);
        } else {
            ++tf[static_cast<std::size_t>(p)];
        }
    };
    // unigrams, then bigrams (the order of the Python analyzer; only tf and first occurrence matter)
    for (const auto& t : toks) count(find(std::string_view(low.data() + t.first, t.second)));
    for (std::size_t i = 0; i + 1 < toks.size(); ++i) {
        bigram.assign(low.data() + toks[i].first, toks[i].second);
        bigram.push_back(' ');
        bigram.append(low.data() + toks[i + 1].first, toks[i + 1].second);
        count(find(bigram));
    }
    for (std::int32_t c : cols) pos[static_cast<std::size_t>(c)] = -1;
    acc.assign(k_, 0.0);
    if (!cols.empty()) {
        const std::size_t T = cols.size();
        vals.resize(T);
        double ss = 0.0;
        for (std::size_t i = 0; i < T; ++i) {
            vals[i] = (1.0 + std::log(static_cast<double>(tf[i]))) * static_cast<double>(idf_[cols[i]]);
            ss += vals[i] * vals[i];
        }
        const double inv = std::sqrt(ss);
        for (std::size_t i = 0; i < T; ++i) {
            const double v = vals[i] / inv;
            const float* row = comp_t_ + static_cast<std::size_t>(cols[i]) * k_;
            double* __restrict a = acc.data();
            for (std::size_t j = 0; j < k_; ++j) a[j] += v * static_cast<double>(row[j]);
        }
    }
    double nn = 0.0;
    for (std::size_t j = 0; j < k_; ++j) nn += acc[j] * acc[j];
    const double norm = std::sqrt(nn);
    const double d = norm > 0.0 ? norm : 1.0;
    for (std::size_t j = 0; j < k_; ++j) out[j] = static_cast<float>(acc[j] / d);
    return true;
}

}  // namespace knnroute


namespace knnroute {

bool count_terms(const std::vector<TermDoc>& docs, std::vector<std::string>& terms,
                 std::vector<std::int32_t>& ids, std::vector<std::int32_t>& counts, std::vector<std::int64_t>& indptr) {
    std::deque<std::string> store;  // stable storage for the map's keys
    std::unordered_map<std::string_view, std::int32_t> vocab;
    vocab.reserve(1 << 16);
    std::string low, bigram;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> toks;
    std::vector<std::int32_t> pos;  // position of a term id in the current document's list, or -1
    terms.clear();
    ids.clear();
    counts.clear();
    indptr.assign(1, 0);
    auto id_of = [&](std::string_view t) -> std::int32_t {
        auto it = vocab.find(t);
        if (it != vocab.end()) return it->second;
        store.emplace_back(t);
        const auto id = static_cast<std::int32_t>(terms.size());
        vocab.emplace(std::string_view(store.back()), id);
        terms.emplace_back(t);
        pos.push_back(-1);
        return id;
    };
    for (const TermDoc& d : docs) {
        const std::size_t start = ids.size();
        auto count = [&](std::int32_t id) {
            std::int32_t& p = pos[static_cast<std::size_t>(id)];
            if (p < 0) {
                p = static_cast<std::int32_t>(ids.size() - start);
                ids.push_back(id);
                counts.push_back(1);
            } else {
                ++counts[start + static_cast<std::size_t>(p)];
            }
        };
        if (d.terms != nullptr) {
            for (const std::string& t : *d.terms) count(id_of(t));
            for (std::size_t i = start; i < ids.size(); ++i) pos[static_cast<std::size_t>(ids[i])] = -1;
            indptr.push_back(static_cast<std::int64_t>(ids.size()));
            continue;
        }
        const std::string_view doc = d.text;
        const std::size_t n = doc.size();
        low.resize(n);
        for (std::size_t i = 0; i < n; ++i) {
            const unsigned char c = static_cast<unsigned char>(doc[i]);
            if (c >= 0x80) return false;
            low[i] = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        toks.clear();
        for (std::size_t i = 0; i < n;) {
            if (!word_char(static_cast<unsigned char>(low[i]))) {
                ++i;
                continue;
            }
            std::size_t j = i;
            while (j < n && word_char(static_cast<unsigned char>(low[j]))) ++j;
            if (j - i >= 2) toks.emplace_back(static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(j - i));
            i = j;
        }
        for (const auto& t : toks) count(id_of(std::string_view(low.data() + t.first, t.second)));
        for (std::size_t i = 0; i + 1 < toks.size(); ++i) {
            bigram.assign(low.data() + toks[i].first, toks[i].second);
            bigram.push_back(' ');
            bigram.append(low.data() + toks[i + 1].first, toks[i + 1].second);
            count(id_of(bigram));
        }
        for (std::size_t i = start; i < ids.size(); ++i) pos[static_cast<std::size_t>(ids[i])] = -1;
        indptr.push_back(static_cast<std::int64_t>(ids.size()));
    }
    return true;
}

}  // namespace knnroute
