-- fleet.lua — a realistic sale.lua for a GPU fleet (sale prewarm / sale tune read it).
--
-- Format: the file SETS GLOBALS, one per section; nothing is returned.
--   cache      = { path = "...", fleet = "..." }   writable cache, read-only fleet file ("~/" expands)
--   defaults   = { block_q, block_k, block_seg, local_window, est_bits, dense_below, tau, thr }
--                est_bits: the code width `sale prewarm` compiles (0/unset: 4 below sm_90, 8 on it);
--                thr: "run" or "fixed", the threshold variant `sale tune` tunes (sale.h,
--                SALE_THR_*; unset: the one a call with thr 0 runs, fixed on sm_90, run elsewhere);
--                the block sizes, tau and dense_below are checked but no command reads them yet
--                (calls take them per call; `fleet` below lists the block sizes to prewarm)
--   arch       = { sm_90 = { <defaults fields> }, ... }   per-arch overrides (at most 4 archs)
--   fleet      = { archs, head_dims, families, dtypes, block_q, block_k, block_seg, local_window, thr }
--                each a list (or one value); prewarm builds every combination, so every
--                block_seg / local_window must suit every block_k
--   tuning     = { warps = {...}, stages = {...}, budget_s = seconds, strategy = "exhaustive"|"halving"|"random" }
--   thresholds = { [model] = { [layer] = { tau_head0, tau_head1, ... } } }   layers from 0, heads in order;
--                [layer] = false: none for that layer. A list of layers ({ {...}, {...} }) is refused:
--                Lua numbers it from 1, so its first layer would land on layer 1
-- Any other global is an error (typo protection): keep helpers `local`.
--
-- Sandbox: base functions (no print, dofile, loadfile, collectgarbage; load takes
-- text only), string (no dump), table, math, utf8, coroutine, and from os only
-- getenv, time, clock, date, difftime. io, require, package, debug are refused.
-- Runs are bounded (20M instructions, 5 s of wall clock with C calls included, 64 MB);
-- __gc metamethods and table functions over more than 4M slots are refused.

local home = os.getenv("HOME") or "/root"

cache = {
  path = home .. "/.cache/sale/kernels.db",
  fleet = "/opt/sale/fleet.db",
}

defaults = {
  block_q = 64,
  block_k = 32,
  block_seg = 128,
  local_window = 128,
  tau = 0.004,
  dense_below = 1024,
}

-- int4 tensor cores are native below Hopper; on sm_90 int4 mma is emulated, so 8-bit.
arch = {
  sm_80 = { est_bits = 4 },
  sm_86 = { est_bits = 4 },
  sm_89 = { est_bits = 4 },
  sm_90 = { est_bits = 8 },
}

fleet = {
  archs = { "sm_80", "sm_86", "sm_89", "sm_90" },
  head_dims = { 64, 128 },
  families = { "quantize", "fused", "select", "attend", "dense" },
  dtypes = { "bf16", "f16" },
  block_q = { 64, 128 },
  block_k = { 32, 64 },
  block_seg = { 128, 256 },
  local_window = { 128 },
  thr = { "run", "fixed" },  -- both (the default): fixed is the fast select on Hopper
}

tuning = {
  warps = { 4, 8 },
  stages = { 1, 2, 3 },
  budget_s = 120,
  strategy = "halving",
}

-- Per-head thresholds from an offline calibration (sale calibrate). Generated
-- here from a rule of thumb to keep the example short: early layers and the
-- first heads of each layer keep more (smaller tau), as calibration tends to find.
local function calibrated(layers, heads, base)
  local t = {}
  for layer = 0, layers - 1 do
    local row = {}
    for head = 1, heads do
      local depth = (layer + 1) / layers
      row[head] = base * (0.5 + depth) * (head <= 2 and 0.25 or 1.0)
    end
    t[layer] = row
  end
  return t
end

thresholds = {
  ["llama-3.1-8b"] = calibrated(32, 32, 0.004),
  ["qwen2.5-7b"] = calibrated(28, 28, 0.003),
}
