-- The capability chain parsers behind REGION_INFO and IOMMU_GET_INFO, fed raw buffers:
-- well-formed chains decode fully; loops, backward or out-of-range links, truncated
-- capabilities and inflated counts are cut off safely and flagged.
local core = require "vfio.core"
local pack = string.pack

local CAPS = 1 << 3 -- VFIO_REGION_INFO_FLAG_CAPS
local function region_info(flags, cap_offset, size, caps)
   local head = pack("<I4I4I4I4I8I8", 0, flags | CAPS, 0, cap_offset, size, 0x10000000000)
   local body = head .. (caps or "")
   return pack("<I4", #body) .. body:sub(5)
end
local function hdr(id, next_) return pack("<I2I2I4", id, 1, next_) end
local function sparse(next_, areas, nr)
   local s = hdr(1, next_) .. pack("<I4I4", nr or #areas, 0)
   for _, a in ipairs(areas) do s = s .. pack("<I8I8", a[1], a[2]) end
   return s
end

describe("REGION_INFO capability parsing", function()
   it("decodes sparse areas, type/subtype and MSI-X mappable", function()
      -- sparse at 32 (16 + 2*16 = 48 bytes) -> type at 80 (16 bytes) -> msix at 96
      local caps = sparse(80, { { 0, 0x1000 }, { 0x3000, 0x1000 } })
         .. hdr(2, 96) .. pack("<I4I4", 0x80008086, 3) .. hdr(3, 0)
      local t = core.parse_region_info(region_info(7, 32, 0x4000, caps))
      assert.are.same({ { offset = 0, size = 0x1000 }, { offset = 0x3000, size = 0x1000 } },
         t.sparse)
      assert.are.equal(0x80008086, t.type)
      assert.are.equal(3, t.subtype)
      assert.is_true(t.msix_mappable)
      assert.is_true(t.readable and t.writable and t.mappable and t.caps)
      assert.are.equal(0x4000, t.size)
      assert.are.equal(0x10000000000, t.offset)
      assert.is_nil(t.chain_error)
   end)

   it("stops at a loop, keeping what came before", function()
      local t = core.parse_region_info(region_info(7, 32, 0x4000, hdr(3, 48) .. pack("<I8", 0)
         .. hdr(2, 32) .. pack("<I4I4", 1, 2)))
      assert.is_true(t.msix_mappable)
      assert.are.equal(1, t.type)
      assert.matches("malformed", t.chain_error)
      local self_loop = core.parse_region_info(region_info(7, 32, 0x4000, hdr(3, 32)))
      assert.is_true(self_loop.msix_mappable)
      assert.is_truthy(self_loop.chain_error)
   end)

   it("rejects offsets outside the buffer, misaligned or inside the fixed part", function()
      for _, off in ipairs { 1000, 33, 4, 0x7fffffff, 0xffffffff } do
         local t = core.parse_region_info(region_info(7, off, 0x4000, hdr(3, 0)))
         assert.is_truthy(t.chain_error, off)
         assert.is_false(t.msix_mappable)
      end
      -- a header cut off by the end of the buffer
      local t = core.parse_region_info(region_info(7, 32, 0x4000, hdr(3, 0):sub(1, 6)))
      assert.is_truthy(t.chain_error)
   end)

   it("trusts area counts only as far as the bytes present and drops bad areas", function()
      local t = core.parse_region_info(region_info(7, 32, 0x4000,
         sparse(0, { { 0, 0x1000 } }, 1000000000)))
      assert.are.same({ { offset = 0, size = 0x1000 } }, t.sparse)
      -- areas outside the region, empty or wrapping are dropped
      t = core.parse_region_info(region_info(7, 32, 0x4000, sparse(0, {
         { 0x4000, 0x1000 }, { 0x1000, 0 }, { 0x1000, -0x1000 }, { 0x2000, 0x2000 } })))
      assert.are.same({ { offset = 0x2000, size = 0x2000 } }, t.sparse)
      -- a sparse capability too short for its own header is ignored
      t = core.parse_region_info(region_info(7, 32, 0x4000, hdr(1, 0)))
      assert.is_nil(t.sparse)
      -- a type capability cut short is ignored
      t = core.parse_region_info(region_info(7, 32, 0x4000, hdr(2, 0) .. pack("<I4", 1)))
      assert.is_nil(t.type)
   end)

   it("ignores unknown capabilities and raises on a short buffer", function()
      local t = core.parse_region_info(region_info(7, 32, 0x4000, hdr(99, 40) .. hdr(3, 0)))
      assert.is_true(t.msix_mappable)
      assert.has_error(function() core.parse_region_info(("\0"):rep(31)) end)
      local no_caps = core.parse_region_info(pack("<I4I4I4I4I8I8", 32, 3, 0, 32, 4096, 0))
      assert.is_nil(no_caps.sparse)
      assert.is_false(no_caps.caps)
   end)
end)

describe("IOMMU_GET_INFO capability parsing", function()
   local function iommu_info(caps)
      local body = pack("<I4I4I8I4I4", 0, 3, 0x40201000, caps and 24 or 0, 0) .. (caps or "")
      return pack("<I4", #body) .. body:sub(5)
   end

   it("decodes page sizes, IOVA ranges, DMA mappings available and migration", function()
      -- iova ranges at 24 (16 + 2*16 = 48) -> dma avail at 72 (12) -> migration at 84
      local caps = hdr(1, 72) .. pack("<I4I4", 2, 0) .. pack("<I8I8I8I8", 0, 0xfedfffff,
            0xfef00000, 0x7fffffffff)
         .. hdr(3, 84) .. pack("<I4", 65535)
         .. hdr(2, 0) .. pack("<I4I4I8I8", 0, 0, 0x1000, 0x10000)
      local t = core.parse_iommu_info(iommu_info(caps))
      assert.are.equal(0x40201000, t.pgsizes)
      assert.are.equal(0x1000, t.min_pgsize)
      assert.are.same({ { start = 0, last = 0xfedfffff }, { start = 0xfef00000,
         last = 0x7fffffffff } }, t.iova_ranges)
      assert.are.equal(65535, t.dma_avail)
      assert.are.same({ pgsizes = 0x1000, max_dirty_bitmap_size = 0x10000 }, t.migration)
      assert.is_nil(t.chain_error)
   end)

   it("cuts inflated range counts and malformed links", function()
      local t = core.parse_iommu_info(iommu_info(hdr(1, 0) .. pack("<I4I4", 0xffffffff, 0)
         .. pack("<I8I8", 0, 0xffff)))
      assert.are.same({ { start = 0, last = 0xffff } }, t.iova_ranges)
      t = core.parse_iommu_info(iommu_info(hdr(3, 24) .. pack("<I4", 5)))
      assert.are.equal(5, t.dma_avail)
      assert.is_truthy(t.chain_error)
      assert.has_error(function() core.parse_iommu_info("short") end)
   end)
end)
