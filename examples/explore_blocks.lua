-- explore_blocks.lua — sweep block_q × block_k × block_seg × τ on structured
-- long-context inputs and print the density / error / time trade-off, with
-- the Pareto front marked '*' (CPU: lower density and lower error; GPU: lower
-- time and lower error).
--
-- usage: sale run examples/explore_blocks.lua [N=4096] [cpu|gpu] [out.csv]
--   cpu: the library's C reference at small shapes (B=1, 2 q heads, 1 kv head, d=64)
--   gpu: sale_attention at Llama-3.1-8B shapes (32 q heads, 8 kv heads, d=128),
--        error against our dense kernel, time with CUDA events.
local N = tonumber(arg[1]) or 4096
local device = arg[2] or "cpu"
local csv_path = arg[3] ~= "" and arg[3] ~= "-" and arg[3] or nil
assert(device == "cpu" or device == "gpu", "device must be cpu or gpu, got " .. tostring(device))
local gpu = device == "gpu"
if gpu and not sale.has_gpu() then error("device gpu asked for, but this machine has no CUDA device") end

local shape = gpu and { B = 1, Hq = 32, Hkv = 8, D = 128 } or { B = 1, Hq = 2, Hkv = 1, D = 64 }
local local_window = 128

local q, k, v = sale.generate { B = shape.B, Hq = shape.Hq, Hkv = shape.Hkv, N = N, D = shape.D,
                                dtype = "bf16", structured = true, seed = 7, device = device }

-- one call of SALE (or dense) on the chosen device; returns out, stats
local out_buf = gpu and sale.tensor_zeros { B = shape.B, H = shape.Hq, N = N, D = shape.D, device = "gpu" } or nil
local function run(p, want_stats)
  local args = { q = q, k = k, v = v, tau = p.tau, block_q = p.block_q, block_k = p.block_k,
                 block_seg = p.block_seg, local_window = local_window, mode = p.mode or "fused",
                 dense_below = -1 }
  if gpu then
    args.out, args.stats = out_buf, want_stats
    return sale.attention(args)
  end
  return sale.reference(args)
end

local function timed(p)
  if gpu then
    return (sale.time(function() run(p, false) end, { warmup = 2, reps = 5 }))
  end
  local t0 = sale.clock()
  local out, stats = run(p, true)
  return (sale.clock() - t0) * 1e3, out, stats
end

-- dense reference (exact attention) and its time
local dense = { mode = "dense", block_q = 64, block_k = 32, block_seg = 128 }
local dense_ms, ref = timed(dense)
if gpu then ref = run(dense, false):to("cpu") end

local rows, refused = {}, {}
for _, bq in ipairs { 64, 128 } do
  for _, bk in ipairs { 16, 32, 64 } do
    for _, seg in ipairs { 64, 128, 256 } do
      local legal = seg % bk == 0 and seg // bk <= 32 and local_window % bk == 0
      if legal then
        for _, tau in ipairs { 0.001, 0.004, 0.01 } do
          local p = { block_q = bq, block_k = bk, block_seg = seg, tau = tau }
          -- the library may refuse a setting for this device (tile limits): report it, go on
          local ok, err = pcall(function()
            local ms, out, stats = timed(p)
            if gpu then out, stats = run(p, true) end
            rows[#rows + 1] = { bq = bq, bk = bk, seg = seg, tau = tau, density = stats.density,
                                rel_l1 = sale.rel_l1(out, ref), ms = ms, speedup = dense_ms / ms }
          end)
          if not ok then
            refused[#refused + 1] = string.format("bq=%d bk=%d seg=%d tau=%g: %s", bq, bk, seg, tau, err)
          end
        end
      end
    end
  end
end

-- Pareto front: no other setting is at least as good on both axes and better on one
local x = gpu and "ms" or "density"
for _, r in ipairs(rows) do
  r.pareto = "*"
  for _, o in ipairs(rows) do
    if o ~= r and o[x] <= r[x] and o.rel_l1 <= r.rel_l1 and (o[x] < r[x] or o.rel_l1 < r.rel_l1) then
      r.pareto = ""
      break
    end
  end
end

local front = 0
for _, r in ipairs(rows) do if r.pareto == "*" then front = front + 1 end end

print(string.format("SALE block sweep: N=%d, B=%d, Hq=%d, Hkv=%d, d=%d, bf16, %s; dense %.2f ms",
                    N, shape.B, shape.Hq, shape.Hkv, shape.D, gpu and "GPU" or "CPU reference", dense_ms))
local cols = { "bq", "bk", "seg", { "tau", fmt = "%.3f" }, { "density", fmt = "%.4f" },
               { "rel_l1", fmt = "%.2e" }, { "ms", fmt = "%.2f" }, { "speedup", fmt = "%.2f" },
               { "pareto", title = "front" } }
sale.table(rows, cols)
print(string.format("%d settings, %d on the Pareto front (lower %s, lower rel_l1)", #rows, front, x))
for _, r in ipairs(refused) do print("refused: " .. r) end
if csv_path then
  sale.csv(csv_path, rows, { "bq", "bk", "seg", "tau", "density", "rel_l1", "ms", "speedup", "pareto" })
end
