-- kernel_info.lua — what ptxas made of kernel keys, without a GPU: each key
-- is compiled by NVRTC (or read from the cache) and printed with its entry,
-- registers a thread, spilled bytes (stores / loads), stack, dynamic and
-- static shared memory, cubin size and compile time. The first thing to read
-- after changing a template: a kernel that spills, or that no longer fits
-- two CTAs an SM, shows here before any device time is spent.
--
-- usage: sale run examples/kernel_info.lua KEY [KEY ...]
--   e.g. sale run examples/kernel_info.lua \
--          "attend:d=128,bq=64,bk=32,dt=bf16,causal=1,warps=12,stages=3,arch=sm_90a"
--   SALE_CACHE_DIR=/tmp/scratch keeps these cubins out of your cache (and
--   recompiles after a template change: the source hash is part of the row).
-- A key that does not compile is reported with its reason; the script then
-- fails, after printing every other key.
if #arg == 0 then
  print("usage: sale run examples/kernel_info.lua KEY [KEY ...]   (see the header of this file)")
  return
end
local failed = {}
for _, text in ipairs(arg) do
  local ok, info = pcall(sale.compile, text)
  if ok then
    print(string.format("%s\n  %s: %d registers, spill %d/%d B, stack %d B, smem %d B dynamic + %d B static, "
                        .. "cubin %d B, %s in %.0f ms",
                        info.key, info.entry, info.registers, info.spill_stores, info.spill_loads, info.stack,
                        info.smem_dynamic, info.smem_static, info.cubin_bytes,
                        info.from_cache and "from the cache" or "compiled", info.compile_ms))
  else
    print(string.format("%s\n  does not compile: %s", text, tostring(info)))
    failed[#failed + 1] = text
  end
end
if #failed > 0 then
  error(string.format("%d of %d keys did not compile: %s", #failed, #arg, table.concat(failed, ", ")), 0)
end
