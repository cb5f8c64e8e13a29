-- needles.lua — which settings keep every planted needle? Structured inputs
-- with needles (a query whose answer is one key far from the diagonal) run
-- through SALE at several block_k × τ × estimation bits; a setting "keeps" a
-- needle when the needle's (query block, key block) is in the kept mask.
--
-- usage: sale run examples/needles.lua [N=4096] [cpu|gpu] [out.csv] [needle_gain=6]
--   a smaller needle_gain plants fainter needles, which sparser settings start to drop
local N = tonumber(arg[1]) or 4096
local device = arg[2] or "cpu"
local csv_path = arg[3] ~= "" and arg[3] ~= "-" and arg[3] or nil
local gain = tonumber(arg[4]) or 6.0
assert(device == "cpu" or device == "gpu", "device must be cpu or gpu, got " .. tostring(device))
local gpu = device == "gpu"
local shape = gpu and { B = 1, Hq = 32, Hkv = 8, D = 128 } or { B = 1, Hq = 2, Hkv = 1, D = 64 }

local q, k, v, needles = sale.generate { B = shape.B, Hq = shape.Hq, Hkv = shape.Hkv, N = N, D = shape.D,
                                         dtype = "bf16", structured = true, needles = 4, needle_gain = gain, seed = 11,
                                         device = device }
if #needles == 0 then error("no needle could be planted at N=" .. N .. " (try a longer N)") end

-- on sm_90 the GPU estimates in 8 bits only; the reference can show both
local bits_list = { 4, 8 }
if gpu then
  local d = sale.device()
  if d and (d.arch == "sm_90" or d.arch == "sm_90a") then bits_list = { 8 } end
end

local rows, keep_all = {}, {}
for _, bits in ipairs(bits_list) do
  for _, bk in ipairs { 16, 32, 64 } do
    for _, tau in ipairs { 0.001, 0.004, 0.01, 0.03, 0.1 } do
      local args = { q = q, k = k, v = v, tau = tau, block_q = 64, block_k = bk, block_seg = 128,
                     local_window = 128, est_bits = bits, dense_below = -1, mode = "fused" }
      local out, stats, mask
      if gpu then
        args.mask, args.mode = true, "two_pass"
        out, stats, mask = sale.attention(args)
      else
        out, stats, mask = sale.reference(args)
      end
      local recall, hit, total = sale.needle_recall(mask, needles)
      local row = { est_bits = bits, bk = bk, tau = tau, density = stats.density, recall = recall,
                    kept = string.format("%d/%d", hit, total), all = hit == total and "yes" or "no" }
      rows[#rows + 1] = row
      if hit == total then keep_all[#keep_all + 1] = row end
    end
  end
end

print(string.format("needles: N=%d, Hq=%d, %d needles planted (gain %g), %s", N, shape.Hq, #needles, gain,
                    gpu and "GPU" or "CPU reference"))
sale.table(rows, { "est_bits", "bk", { "tau", fmt = "%.3f" }, { "density", fmt = "%.4f" },
                   { "recall", fmt = "%.3f" }, "kept", { "all", title = "every needle" } })

-- the sparsest setting that still keeps every needle
table.sort(keep_all, function(a, b) return a.density < b.density end)
print(string.format("keep every needle: %d of %d settings", #keep_all, #rows))
if keep_all[1] then
  local b = keep_all[1]
  print(string.format("sparsest that keeps all: est_bits=%d block_k=%d tau=%.3f density=%.4f",
                      b.est_bits, b.bk, b.tau, b.density))
end
if csv_path then
  sale.csv(csv_path, rows, { "est_bits", "bk", "tau", "density", "recall", "kept", "all" })
end
