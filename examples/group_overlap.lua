-- group_overlap.lua — how much of their kept K/V the query heads of a GQA group
-- share. The rows attend kernel reads each head's kept blocks on its own (the
-- group's heads meet only in L2); a kernel that read a group's union once
-- would load `union` blocks where the rows kernel loads `kept`. This prints,
-- for several tau, the density, both counts and their ratio (1: nothing
-- shared; the group size: every head keeps the same blocks), so the gain of
-- such a kernel can be judged before it is written.
--
-- usage: sale run examples/group_overlap.lua [N=4096] [cpu|gpu] [taus=0.0015,0.004,0.01] [out.csv]
--   gpu: B=1, 32 query heads, 8 KV heads, head_dim 128 (the benchmark's shape), two_pass;
--   cpu: the reference at 4 query heads, 1 KV head, head_dim 64 (N of a few thousand)
local N = tonumber(arg[1]) or 4096
local device = arg[2] or "cpu"
assert(device == "cpu" or device == "gpu", "device must be cpu or gpu, got " .. tostring(device))
local taus = {}
for t in string.gmatch(arg[3] or "0.0015,0.004,0.01", "[^,]+") do
  taus[#taus + 1] = assert(tonumber(t), "taus: a comma-separated list of numbers, got " .. tostring(arg[3]))
end
local csv_path = arg[4] ~= "" and arg[4] ~= "-" and arg[4] or nil
local gpu = device == "gpu"
local shape = gpu and { B = 1, Hq = 32, Hkv = 8, D = 128 } or { B = 1, Hq = 4, Hkv = 1, D = 64 }
local group = shape.Hq // shape.Hkv

local q, k, v = sale.generate { B = shape.B, Hq = shape.Hq, Hkv = shape.Hkv, N = N, D = shape.D, dtype = "bf16",
                                structured = true, seed = 7, device = device }
local rows = {}
for _, tau in ipairs(taus) do
  local args = { q = q, k = k, v = v, tau = tau, dense_below = -1 }
  local _, stats, mask
  if gpu then
    args.mask, args.mode = true, "two_pass"
    _, stats, mask = sale.attention(args)
  else
    _, stats, mask = sale.reference(args)
  end
  local kept, union = mask:group_overlap(group)
  rows[#rows + 1] = { tau = tau, density = stats.density, kept = kept, union = union,
                      shared = kept / union, reads = union / kept }
end
print(string.format("GQA group overlap: N=%d, %d query heads in groups of %d, %s", N, shape.Hq, group,
                    gpu and "GPU (two_pass)" or "CPU reference"))
sale.table(rows, { { "tau", fmt = "%.4f" }, { "density", fmt = "%.4f" }, "kept", "union",
                   { "shared", fmt = "%.2f", title = "kept / union" },
                   { "reads", fmt = "%.2f", title = "union reads / rows reads" } })
if csv_path then
  sale.csv(csv_path, rows, { "tau", "density", "kept", "union", "shared", "reads" })
end
