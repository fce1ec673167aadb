#include "knnroute/pool.hpp"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include <unistd.h>

namespace knnroute {

namespace {

class Pool {
public:
    Pool() : pid_(getpid()) {
        unsigned hc = std::thread::hardware_concurrency();
        const int workers = hc > 1 ? static_cast<int>(hc) - 1 : 0;
        for (int w = 0; w < workers; ++w) threads_.emplace_back([this, w] { loop(w + 1); });
    }
    ~Pool() {
        {
            std::lock_guard<std::mutex> lk(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        for (auto& t : threads_) t.join();
    }
    int size() const { return static_cast<int>(threads_.size()) + 1; }
    // A forked child inherits this object but not its threads: it must never wait for them.
    bool usable() const { return getpid() == pid_; }

    bool try_run(int n_tasks, const std::function<void(int)>& fn) {
        std::unique_lock<std::mutex> job(job_mu_, std::try_to_lock);
        if (!job.owns_lock()) return false;
        if (n_tasks > size()) n_tasks = size();
        {
            std::lock_guard<std::mutex> lk(mu_);
            fn_ = &fn;
            n_tasks_ = n_tasks;
            pending_ = n_tasks - 1;
            err_ = nullptr;
            ++gen_;
        }
        if (n_tasks > 1) cv_.notify_all();
        run_task(fn, 0);
        {
            std::unique_lock<std::mutex> lk(mu_);
            done_cv_.wait(lk, [this] { return pending_ == 0; });
            fn_ = nullptr;
        }
        if (err_) std::rethrow_exception(err_);
        return true;
    }

private:
    void run_task(const std::function<void(int)>& fn, int t) {
        try {
            fn(t);
        } catch (...) {
            std::lock_guard<std::mutex> lk(err_mu_);
            if (!err_) err_ = std::current_exception();
        }
    }
    void loop(int id) {
        unsigned long long seen = 0;
        for (;;) {
            const std::function<void(int)>* fn;
            {
                std::unique_lock<std::mutex> lk(mu_);
                cv_.wait(lk, [&] { return stop_ || gen_ != seen; });
                if (stop_) return;
                seen = gen_;
                if (id >= n_tasks_) continue;
                fn = fn_;
            }
            run_task(*fn, id);
            {
                std::lock_guard<std::mutex> lk(mu_);
                if (--pending_ == 0) done_cv_.notify_one();
            }
        }
    }

    const pid_t pid_;
    std::vector<std::thread> threads_;
    std::mutex job_mu_, mu_, err_mu_;
    std::condition_variable cv_, done_cv_;
    const std::function<void(int)>* fn_ = nullptr;
    int n_tasks_ = 0, pending_ = 0;
    unsigned long long gen_ = 0;
    bool stop_ = false;
    std::exception_ptr err_;
};

Pool& pool() {
    // Leaked on purpose: joining threads from a static destructor at interpreter exit can deadlock.
    static Pool* p = new Pool();
    return *p;
}

}  // namespace

int pool_threads() { return pool().usable() ? pool().size() : 1; }

bool pool_try_run(int n_tasks, const std::function<void(int)>& fn) {
    if (n_tasks <= 1) {
        fn(0);
        return true;
    }
    Pool& p = pool();
    if (!p.usable()) return false;  // forked child: the caller runs alone
    return p.try_run(n_tasks, fn);
}

}  // namespace knnroute
