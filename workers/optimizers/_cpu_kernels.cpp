// One-pass CPU kernels for the elementwise optimizers whose rules torch has no fused kernel for (Cautious, MARS,
// AdamH, Lion, Adam-mini, Sophia-H's step). Built on first use by workers/optimizers/_cpu_kernels.py
// (torch.utils.cpp_extension); the Python paths built from torch ops remain the reference and the fallback.
//
// Why: with torch ops every extra operation is another pass over model-sized tensors (on the bench model a fused
// AdamW step costs 2.1-2.6 ms, each extra in-place pass 0.5-1.5 ms), so Cautious, MARS and AdamH cost 3.5x a fused
// AdamW step. Here each kernel reads and writes every tensor once per pass. The Adam direction is torch's fused
// kernel's u = (m / bc1) / (sqrt(v) / bc2s + eps), bc1 = 1 - b1^t, bc2s = sqrt(1 - b2^t). Cautious and AdamH
// need a reduction over u before they can move the weights, so their second pass computes u again from m and v:
// measured on the bench model's matrices, that beat writing u to a buffer and reading it back (1.54x against
// 1.78x a fused AdamW pass for Cautious, 1.43x against 1.63x for AdamH), since a store costs more than a load.
//
// Every entry point takes lists (one entry per parameter tensor) and runs one parallel loop over chunks of at most
// 16384 elements of all of them: one call from Python and one fork/join per pass, not one per tensor (on the bench
// model's 29 matrices the per-tensor calls cost a third of a step). Every tensor: float32, contiguous, on the CPU
// (_cpu_kernels.py checks). Reductions accumulate in float within a chunk (vectorised by `omp simd`) and in double
// across chunks.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <vector>

namespace {

constexpr int64_t kGrain = 16384;

using Tensors = std::vector<torch::Tensor>;
using Sums3 = std::array<double, 3>;

// The bias corrections are applied as reciprocals (a multiply, not a divide, per element): the same values as
// torch's fused kernel up to float rounding.
struct Adam {
  float b1, b2, inv_bc1, inv_bc2s, eps;
};

Adam adam(double b1, double b2, double bc1, double bc2s, double eps) {
  return Adam{static_cast<float>(b1), static_cast<float>(b2), static_cast<float>(1.0 / bc1),
              static_cast<float>(1.0 / bc2s), static_cast<float>(eps)};
}

// m <- lerp(m, g, 1 - b1), v <- b2 v + (1 - b2) g^2 (torch's fused kernel's order).
inline void advance(const Adam a, float g, float& m, float& v) {
  m = m + (1.0f - a.b1) * (g - m);
  v = a.b2 * v + (1.0f - a.b2) * g * g;
}

inline float direction(const Adam a, float m, float v) {
  return (m * a.inv_bc1) / (std::sqrt(v) * a.inv_bc2s + a.eps);
}

float* f32(const torch::Tensor& t) { return t.data_ptr<float>(); }

// A chunk of one tensor: tensor index and element range.
struct Chunk {
  int64_t tensor, begin, end;
};

std::vector<Chunk> chunks_of(const Tensors& tensors) {
  std::vector<Chunk> chunks;
  for (int64_t t = 0; t < static_cast<int64_t>(tensors.size()); ++t) {
    const int64_t n = tensors[t].numel();
    for (int64_t b = 0; b < n; b += kGrain) {
      chunks.push_back({t, b, std::min(n, b + kGrain)});
    }
  }
  return chunks;
}

// body(chunk, index) for every chunk, in one parallel loop. The element loops live in plain functions with
// restrict pointers (the *_range functions below) that `body` calls: written inside lambdas, gcc left them scalar.
template <typename Body>
void for_chunks(const std::vector<Chunk>& chunks, const Body& body) {
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      body(chunks[i], i);
    }
  });
}

// Per-tensor totals (in double) of per-chunk partial sums.
template <size_t K>
std::vector<std::array<double, K>> per_tensor(const std::vector<Chunk>& chunks,
                                              const std::vector<std::array<float, K>>& partial, size_t n_tensors) {
  std::vector<std::array<double, K>> totals(n_tensors);
  for (auto& t : totals) t.fill(0.0);
  for (size_t i = 0; i < chunks.size(); ++i) {
    for (size_t k = 0; k < K; ++k) totals[chunks[i].tensor][k] += static_cast<double>(partial[i][k]);
  }
  return totals;
}

// Every list must hold contiguous float32 CPU tensors, as many as the first list, each with the first list's sizes
// (`same_numel`; Adam-mini's second moments are per block). Checked before the parallel loop: data_ptr would throw
// inside it, which OpenMP turns into an abort. _cpu_kernels.py only calls with such lists; this is for misuse.
void check(std::initializer_list<const Tensors*> lists, bool same_numel = true) {
  const Tensors& first = **lists.begin();
  for (const Tensors* list : lists) {
    TORCH_CHECK(list->size() == first.size(), "cpu_kernels: tensor lists of different lengths");
    for (size_t i = 0; i < list->size(); ++i) {
      const torch::Tensor& t = (*list)[i];
      TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(),
                  "cpu_kernels: every tensor must be a contiguous float32 CPU tensor");
      TORCH_CHECK(!same_numel || t.numel() == first[i].numel(), "cpu_kernels: tensor sizes differ");
    }
  }
}

void check_scalars(const Tensors& tensors, std::initializer_list<const std::vector<double>*> lists) {
  for (const auto* list : lists) {
    TORCH_CHECK(list->size() == tensors.size(), "cpu_kernels: one scalar per tensor expected");
  }
}

// ---- Cautious (Levanter scale_by_cautious) ---------------------------------------------------------------------

float cautious_moments_range(const float* __restrict G, float* __restrict M, float* __restrict V, const Adam a,
                             int64_t begin, int64_t end) {
  float count = 0.0f;  // exact in float: a chunk holds at most kGrain elements
#pragma omp simd reduction(+ : count)
  for (int64_t i = begin; i < end; ++i) {
    float mi = M[i], vi = V[i];
    advance(a, G[i], mi, vi);
    M[i] = mi;
    V[i] = vi;
    count += static_cast<float>(direction(a, mi, vi) * G[i] > 0.0f);
  }
  return count;
}

// Pass 1: advance m and v with g; return per tensor how many elements have u g > 0.
// bc1s[t] = 1 - b1^step, bc2ss[t] = sqrt(1 - b2^step) of tensor t.
std::vector<int64_t> cautious_moments(const Tensors& g, const Tensors& m, const Tensors& v, double b1, double b2,
                                      const std::vector<double>& bc1s, const std::vector<double>& bc2ss,
                                      double eps) {
  check({&g, &m, &v});
  check_scalars(g, {&bc1s, &bc2ss});
  const auto chunks = chunks_of(g);
  std::vector<std::array<float, 1>> partial(chunks.size());
  for_chunks(chunks, [&](const Chunk& c, int64_t i) {
    const Adam a = adam(b1, b2, bc1s[c.tensor], bc2ss[c.tensor], eps);
    const int64_t t = c.tensor;
    partial[i][0] = cautious_moments_range(f32(g[t]), f32(m[t]), f32(v[t]), a, c.begin, c.end);
  });
  std::vector<int64_t> counts;
  for (const auto& total : per_tensor(chunks, partial, g.size())) counts.push_back(static_cast<int64_t>(total[0]));
  return counts;
}

void cautious_apply_range(float* __restrict P, const float* __restrict G, const float* __restrict M,
                          const float* __restrict V, const Adam a, float decay, float step, int64_t begin,
                          int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    float u = direction(a, M[i], V[i]);
    float kept = u * static_cast<float>(u * G[i] > 0.0f);  // u x mask as Levanter: a NaN u stays NaN (NaN x 0)
    P[i] = P[i] * decay - step * kept;
  }
}

// Pass 2: u again from the advanced m and v; p <- p (1 - lr wd) - lr mask_scales[t] u 1[u g > 0],
// mask_scales[t] = 1 / (mean(mask) + eps).
void cautious_apply(const Tensors& p, const Tensors& g, const Tensors& m, const Tensors& v,
                    const std::vector<double>& bc1s, const std::vector<double>& bc2ss, double eps, double lr,
                    double wd, const std::vector<double>& mask_scales) {
  check({&p, &g, &m, &v});
  check_scalars(p, {&bc1s, &bc2ss, &mask_scales});
  const auto chunks = chunks_of(p);
  const float decay = static_cast<float>(1.0 - lr * wd);
  for_chunks(chunks, [&](const Chunk& c, int64_t) {
    const Adam a = adam(0.0, 0.0, bc1s[c.tensor], bc2ss[c.tensor], eps);
    const float step = static_cast<float>(lr * mask_scales[c.tensor]);
    const int64_t t = c.tensor;
    cautious_apply_range(f32(p[t]), f32(g[t]), f32(m[t]), f32(v[t]), a, decay, step, c.begin, c.end);
  });
}

// ---- MARS (Levanter scale_by_mars) -----------------------------------------------------------------------------

float mars_sumsq_range(const float* __restrict G, const float* __restrict Q, float k, int64_t begin, int64_t end) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = begin; i < end; ++i) {
    float c = G[i] + k * (G[i] - Q[i]);
    sum += c * c;
  }
  return sum;
}

// Pass 1: the sum over all tensors of c^2, c = g + k (g - prev) (k = gamma b1 / (1 - b1)).
double mars_sumsq(const Tensors& g, const Tensors& prev, double k) {
  check({&g, &prev});
  const auto chunks = chunks_of(g);
  std::vector<std::array<float, 1>> partial(chunks.size());
  const float kf = static_cast<float>(k);
  for_chunks(chunks, [&](const Chunk& c, int64_t i) {
    partial[i][0] = mars_sumsq_range(f32(g[c.tensor]), f32(prev[c.tensor]), kf, c.begin, c.end);
  });
  double total = 0.0;
  for (const auto& t : per_tensor(chunks, partial, g.size())) total += t[0];
  return total;
}

void mars_apply_range(float* __restrict P, const float* __restrict G, float* __restrict Q, float* __restrict M,
                      float* __restrict V, const Adam a, float k, float inv_divisor, float decay, float step,
                      int64_t begin, int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    float gi = G[i];
    float c = (gi + k * (gi - Q[i])) * inv_divisor;
    float mi = M[i], vi = V[i];
    advance(a, c, mi, vi);
    M[i] = mi;
    V[i] = vi;
    Q[i] = gi;
    P[i] = P[i] * decay - step * direction(a, mi, vi);
  }
}

// Pass 2: c = (g + k (g - prev)) / divisor; Adam on c; p <- p (1 - lr wd) - lr u; prev <- g.
void mars_apply(const Tensors& p, const Tensors& g, const Tensors& prev, const Tensors& m, const Tensors& v, double k,
                double divisor, double b1, double b2, const std::vector<double>& bc1s,
                const std::vector<double>& bc2ss, double eps, double lr, double wd) {
  check({&p, &g, &prev, &m, &v});
  check_scalars(p, {&bc1s, &bc2ss});
  const auto chunks = chunks_of(p);
  const float kf = static_cast<float>(k), inv_div = static_cast<float>(1.0 / divisor);
  const float decay = static_cast<float>(1.0 - lr * wd), step = static_cast<float>(lr);
  for_chunks(chunks, [&](const Chunk& c, int64_t) {
    const Adam a = adam(b1, b2, bc1s[c.tensor], bc2ss[c.tensor], eps);
    const int64_t t = c.tensor;
    mars_apply_range(f32(p[t]), f32(g[t]), f32(prev[t]), f32(m[t]), f32(v[t]), a, kf, inv_div, decay, step, c.begin,
                     c.end);
  });
}

// ---- global-norm clip and AdamH (Marin's Hyperball) --------------------------------------------------------------

float sumsq_range(const float* __restrict X, int64_t begin, int64_t end) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = begin; i < end; ++i) {
    sum += X[i] * X[i];
  }
  return sum;
}

// The sum over all tensors of x^2 (a global-norm clip's norm: one read of the gradients).
double sumsq(const Tensors& x) {
  check({&x});
  const auto chunks = chunks_of(x);
  std::vector<std::array<float, 1>> partial(chunks.size());
  for_chunks(chunks, [&](const Chunk& c, int64_t i) {
    partial[i][0] = sumsq_range(f32(x[c.tensor]), c.begin, c.end);
  });
  double total = 0.0;
  for (const auto& t : per_tensor(chunks, partial, x.size())) total += t[0];
  return total;
}

std::array<float, 3> adamh_moments_range(const float* __restrict G, float* __restrict M, float* __restrict V,
                                         const float* __restrict W, const Adam a, float scale, int64_t begin,
                                         int64_t end) {
  float uu = 0.0f, wu = 0.0f, ww = 0.0f;
#pragma omp simd reduction(+ : uu, wu, ww)
  for (int64_t i = begin; i < end; ++i) {
    float mi = M[i], vi = V[i];
    advance(a, G[i] * scale, mi, vi);
    M[i] = mi;
    V[i] = vi;
    float u = direction(a, mi, vi), w = W[i];
    uu += u * u;
    wu += w * u;
    ww += w * w;
  }
  return {uu, wu, ww};
}

// Pass 1: advance m and v with g x grad_scale (the clip factor); return per tensor (sum u^2, sum W u, sum W^2),
// from which the caller gets ||u|| and the norm of W' = W - c u without a pass over W':
// ||W||^2 - 2 c W.u + c^2 ||u||^2.
std::vector<Sums3> adamh_moments(const Tensors& g, const Tensors& m, const Tensors& v, const Tensors& w,
                                 double grad_scale, double b1, double b2, const std::vector<double>& bc1s,
                                 const std::vector<double>& bc2ss, double eps) {
  check({&g, &m, &v, &w});
  check_scalars(g, {&bc1s, &bc2ss});
  const auto chunks = chunks_of(g);
  std::vector<std::array<float, 3>> partial(chunks.size());
  const float scale = static_cast<float>(grad_scale);
  for_chunks(chunks, [&](const Chunk& c, int64_t i) {
    const Adam a = adam(b1, b2, bc1s[c.tensor], bc2ss[c.tensor], eps);
    const int64_t t = c.tensor;
    partial[i] = adamh_moments_range(f32(g[t]), f32(m[t]), f32(v[t]), f32(w[t]), a, scale, c.begin, c.end);
  });
  return per_tensor(chunks, partial, g.size());
}

void adamh_apply_range(float* __restrict P, const float* __restrict M, const float* __restrict V, const Adam a,
                       float coef, float rescale, int64_t begin, int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    P[i] = rescale * (P[i] - coef * direction(a, M[i], V[i]));
  }
}

// Pass 2: u again from the advanced m and v; W <- rescales[t] (W - coefs[t] u), coef = lr R / ||u||,
// rescale = R / ||W - coef u|| (back onto the sphere).
void adamh_apply(const Tensors& p, const Tensors& m, const Tensors& v, const std::vector<double>& bc1s,
                 const std::vector<double>& bc2ss, double eps, const std::vector<double>& coefs,
                 const std::vector<double>& rescales) {
  check({&p, &m, &v});
  check_scalars(p, {&bc1s, &bc2ss, &coefs, &rescales});
  const auto chunks = chunks_of(p);
  for_chunks(chunks, [&](const Chunk& c, int64_t) {
    const Adam a = adam(0.0, 0.0, bc1s[c.tensor], bc2ss[c.tensor], eps);
    const int64_t t = c.tensor;
    adamh_apply_range(f32(p[t]), f32(m[t]), f32(v[t]), a, static_cast<float>(coefs[t]),
                      static_cast<float>(rescales[t]), c.begin, c.end);
  });
}

// ---- Lion (optax scale_by_lion) ---------------------------------------------------------------------------------

void lion_range(float* __restrict P, const float* __restrict G, float* __restrict M, float b1, float b2, float decay,
                float step, int64_t begin, int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    float gi = G[i], mi = M[i];
    float c = mi + (1.0f - b1) * (gi - mi);
    // sign(c) as torch.sign / jnp.sign: 0 for 0, NaN for NaN (a diverged run must show it); single selects so
    // the loop vectorises (a nested conditional left it scalar, 7x slower).
    float u = (c > 0.0f ? 1.0f : 0.0f) - (c < 0.0f ? 1.0f : 0.0f);
    u = (c != c) ? c : u;
    M[i] = mi + (1.0f - b2) * (gi - mi);
    P[i] = P[i] * decay - step * u;
  }
}

// One pass: u = sign(lerp(m, g, 1 - b1)); m <- lerp(m, g, 1 - b2); p <- p (1 - lr wd) - lr u.
void lion_step(const Tensors& p, const Tensors& g, const Tensors& m, double b1, double b2, double lr, double wd) {
  check({&p, &g, &m});
  const auto chunks = chunks_of(p);
  const float fb1 = static_cast<float>(b1), fb2 = static_cast<float>(b2);
  const float decay = static_cast<float>(1.0 - lr * wd), step = static_cast<float>(lr);
  for_chunks(chunks, [&](const Chunk& c, int64_t) {
    lion_range(f32(p[c.tensor]), f32(g[c.tensor]), f32(m[c.tensor]), fb1, fb2, decay, step, c.begin, c.end);
  });
}

// ---- Adam-mini (one second moment per block) --------------------------------------------------------------------

// Rows [first, last) of one tensor viewed as (n_blocks, block): m <- lerp(m, g, 1 - b1) and the row's mean g^2 into
// v (b2 v + (1 - b2) mean); then, with the row still in cache, p <- p (1 - lr wd) - (lr / bc1) m / (sqrt(v / bc2)
// + eps), as adam_mini's torch ops compute it.
void adam_mini_rows(float* __restrict P, const float* __restrict G, float* __restrict M, float* __restrict V,
                    int64_t block, int64_t first, int64_t last, float b1, float b2, float inv_bc2, float eps,
                    float decay, float step) {
  for (int64_t row = first; row < last; ++row) {
    const int64_t begin = row * block, end = begin + block;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = begin; i < end; ++i) {
      float gi = G[i];
      M[i] = M[i] + (1.0f - b1) * (gi - M[i]);
      sum += gi * gi;
    }
    const float v = b2 * V[row] + (1.0f - b2) * (sum / static_cast<float>(block));
    V[row] = v;
    const float scale = step / (std::sqrt(v * inv_bc2) + eps);
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      P[i] = P[i] * decay - scale * M[i];
    }
  }
}

// One step of Adam-mini's blocked rule for every tensor: v[t] holds its (n_blocks, 1) second moments;
// bc1s[t] = 1 - b1^step, bias2s[t] = 1 - b2^step (not its square root: the root is taken of v / bias2).
void adam_mini_step(const Tensors& p, const Tensors& g, const Tensors& m, const Tensors& v, double b1, double b2,
                    const std::vector<double>& bc1s, const std::vector<double>& bias2s, double eps, double lr,
                    double wd) {
  check({&p, &g, &m});
  check({&p, &v}, /*same_numel=*/false);
  check_scalars(p, {&bc1s, &bias2s});
  for (size_t t = 0; t < p.size(); ++t) {
    TORCH_CHECK(v[t].numel() > 0 && p[t].numel() % v[t].numel() == 0, "cpu_kernels: blocks must divide the tensor");
  }
  std::vector<Chunk> items;  // here: (tensor, first row, last row), about kGrain elements each
  for (int64_t t = 0; t < static_cast<int64_t>(p.size()); ++t) {
    const int64_t rows = v[t].numel(), block = p[t].numel() / rows;
    const int64_t per_item = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, block));
    for (int64_t r = 0; r < rows; r += per_item) items.push_back({t, r, std::min(rows, r + per_item)});
  }
  const float decay = static_cast<float>(1.0 - lr * wd);
  for_chunks(items, [&](const Chunk& c, int64_t) {
    const int64_t t = c.tensor, block = p[t].numel() / v[t].numel();
    adam_mini_rows(f32(p[t]), f32(g[t]), f32(m[t]), f32(v[t]), block, c.begin, c.end, static_cast<float>(b1),
                   static_cast<float>(b2), static_cast<float>(1.0 / bias2s[t]), static_cast<float>(eps), decay,
                   static_cast<float>(lr / bc1s[t]));
  });
}

// ---- Sophia-H's step (Levanter scale_by_sophia) ----------------------------------------------------------------

void sophia_range(float* __restrict P, const float* __restrict G, float* __restrict M, const float* __restrict H,
                  float b1, float floor, float clip, float decay, float step, int64_t begin, int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    float m = M[i] + (1.0f - b1) * (G[i] - M[i]);
    M[i] = m;
    float h = H[i] < floor ? floor : H[i];  // clamp_min; selects keep a NaN (as torch.clamp), fmax would drop it
    float u = m / h;
    u = u < -clip ? -clip : u;
    u = u > clip ? clip : u;
    P[i] = P[i] * decay - step * u;
  }
}

// One pass: m <- lerp(m, g, 1 - b1); u = clip(m / max(h, floor), -clip, clip); p <- p (1 - lr wd) - step u
// (sophia.py folds the bias correction and gamma into floor, clip and step).
void sophia_step(const Tensors& p, const Tensors& g, const Tensors& m, const Tensors& h, double b1, double floor,
                 double clip, double lr, double wd, double step) {
  check({&p, &g, &m, &h});
  const auto chunks = chunks_of(p);
  const float fb1 = static_cast<float>(b1), ffloor = static_cast<float>(floor), fclip = static_cast<float>(clip);
  const float decay = static_cast<float>(1.0 - lr * wd), fstep = static_cast<float>(step);
  for_chunks(chunks, [&](const Chunk& c, int64_t) {
    const int64_t t = c.tensor;
    sophia_range(f32(p[t]), f32(g[t]), f32(m[t]), f32(h[t]), fb1, ffloor, fclip, decay, fstep, c.begin, c.end);
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("cautious_moments", &cautious_moments);
  module.def("cautious_apply", &cautious_apply);
  module.def("mars_sumsq", &mars_sumsq);
  module.def("mars_apply", &mars_apply);
  module.def("sumsq", &sumsq);
  module.def("adamh_moments", &adamh_moments);
  module.def("adamh_apply", &adamh_apply);
  module.def("lion_step", &lion_step);
  module.def("adam_mini_step", &adam_mini_step);
  module.def("sophia_step", &sophia_step);
}
