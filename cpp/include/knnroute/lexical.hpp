// The lexical hybrid's per-prompt transform (knnroute.embed.lexical.LexicalModel.transform) for ASCII text:
// word 1-2-gram terms (scikit-learn's token pattern \b\w\w+\b on the lowercased text), sublinear tf x idf,
// l2, projected on the LSA rows of the prompt's terms only, unit length. Text with any non-ASCII character
// is left to the Python path (Unicode word characters and lowercasing are Python's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace knnroute {

class LexicalIndex {
public:
    // vocabulary (V terms, distinct), idf (V,), comp_t (V, k) row-major: term t's LSA row. idf and comp_t are
    // borrowed: the caller keeps them alive and unchanged.
    LexicalIndex(std::vector<std::string> vocabulary, const float* idf, const float* comp_t, std::size_t k);

    std::size_t dim() const { return k_; }
    std::size_t size() const { return vocab_.size(); }
    // Term index or -1.
    std::int64_t find(std::string_view term) const;
    // Transform the first max_chars bytes of ASCII text into out (k,) float32 (a zero row when no term is
    // known). Returns false (out untouched) when those bytes hold a non-ASCII byte.
    bool transform(const char* text, std::size_t n, std::size_t max_chars, float* out) const;

private:
    std::vector<std::string> vocab_;
    const float* idf_;
    const float* comp_t_;
    std::size_t k_;
    std::vector<std::int32_t> table_;  // open addressing: term index or -1
    std::size_t mask_ = 0;
};

}  // namespace knnroute

namespace knnroute {

// Term counts of ASCII documents for fitting (scikit-learn's CountVectorizer on word 1-2-grams of the
// lowercased text, token pattern \b\w\w+\b): terms get ids in order of first appearance over the documents;
// each document lists its distinct term ids in order of first appearance in it, with their counts (CSR:
// indptr (n_docs + 1), ids, counts). A document given as terms is counted as is (unigrams, then bigrams).
// Returns false (outputs unspecified) if a document given as text holds a non-ASCII byte.
// A document given as text (ASCII: tokenised here) or as its terms already (tokenised by the caller).
struct TermDoc {
    std::string_view text;
    const std::vector<std::string>* terms = nullptr;  // used when not null
};
bool count_terms(const std::vector<TermDoc>& docs, std::vector<std::string>& terms,
                 std::vector<std::int32_t>& ids, std::vector<std::int32_t>& counts, std::vector<std::int64_t>& indptr);

}  // namespace knnroute
