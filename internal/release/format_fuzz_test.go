package release

import (
	"bytes"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/binary"
	"fmt"
	"github.com/baton-go/baton/internal/fuzzseed"
	"runtime/metrics"
	"testing"
)

// Minimal executables (headers and one loaded segment or section, a few
// hundred bytes) for the fuzzer to start from: a real binary is megabytes,
// too large to mutate quickly.

func minimalELF(wide bool, order binary.ByteOrder, machine elf.Machine, osabi elf.OSABI, typ elf.Type) []byte {
	var b bytes.Buffer
	ident := [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS32), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT), byte(osabi)}
	if wide {
		ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	}
	if order == binary.BigEndian {
		ident[elf.EI_DATA] = byte(elf.ELFDATA2MSB)
	}
	if wide {
		const size = 64 + 56 + 16
		binary.Write(&b, order, elf.Header64{Ident: ident, Type: uint16(typ), Machine: uint16(machine), Version: 1,
			Entry: 0x400078, Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 1, Shentsize: 64})
		binary.Write(&b, order, elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Vaddr: 0x400000, Paddr: 0x400000,
			Filesz: size, Memsz: size, Align: 0x1000})
	} else {
		const size = 52 + 32 + 16
		binary.Write(&b, order, elf.Header32{Ident: ident, Type: uint16(typ), Machine: uint16(machine), Version: 1,
			Entry: 0x8048054, Phoff: 52, Ehsize: 52, Phentsize: 32, Phnum: 1, Shentsize: 40})
		binary.Write(&b, order, elf.Prog32{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Vaddr: 0x8048000, Paddr: 0x8048000,
			Filesz: size, Memsz: size, Align: 0x1000})
	}
	b.Write(bytes.Repeat([]byte{0xc3}, 16))
	return b.Bytes()
}

// minimalELFSections is a 64-bit ELF with a section header table: a .text
// and the section names.
func minimalELFSections() []byte {
	order := binary.LittleEndian
	names := []byte("\x00.text\x00.shstrtab\x00")
	const phoff, textOff = 64, 64 + 56
	namesOff := textOff + 16
	shoff := namesOff + len(names)
	var b bytes.Buffer
	ident := [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)}
	binary.Write(&b, order, elf.Header64{Ident: ident, Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: 1,
		Entry: 0x400000 + textOff, Phoff: phoff, Shoff: uint64(shoff), Ehsize: 64, Phentsize: 56, Phnum: 1, Shentsize: 64, Shnum: 3, Shstrndx: 2})
	binary.Write(&b, order, elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Vaddr: 0x400000,
		Filesz: uint64(namesOff), Memsz: uint64(namesOff), Align: 0x1000})
	b.Write(bytes.Repeat([]byte{0x90}, 16))
	b.Write(names)
	binary.Write(&b, order, elf.Section64{})
	binary.Write(&b, order, elf.Section64{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC | elf.SHF_EXECINSTR),
		Addr: 0x400000 + textOff, Off: textOff, Size: 16, Addralign: 16})
	binary.Write(&b, order, elf.Section64{Name: 7, Type: uint32(elf.SHT_STRTAB), Off: uint64(namesOff), Size: uint64(len(names)), Addralign: 1})
	return b.Bytes()
}

func minimalPE(machine uint16, characteristics uint16) []byte {
	var b bytes.Buffer
	dos := make([]byte, 0x40)
	dos[0], dos[1] = 'M', 'Z'
	binary.LittleEndian.PutUint32(dos[0x3c:], 0x40)
	b.Write(dos)
	b.WriteString("PE\x00\x00")
	const opt = 240
	const dataOff = 0x40 + 4 + 20 + opt + 40
	binary.Write(&b, binary.LittleEndian, pe.FileHeader{Machine: machine, NumberOfSections: 1, SizeOfOptionalHeader: opt, Characteristics: characteristics})
	binary.Write(&b, binary.LittleEndian, pe.OptionalHeader64{Magic: 0x20b, AddressOfEntryPoint: 0x1000, ImageBase: 0x140000000,
		SectionAlignment: 0x1000, FileAlignment: 0x200, MajorSubsystemVersion: 6, SizeOfImage: 0x2000, SizeOfHeaders: dataOff,
		Subsystem: pe.IMAGE_SUBSYSTEM_WINDOWS_CUI, NumberOfRvaAndSizes: 16})
	var name [8]uint8
	copy(name[:], ".text")
	binary.Write(&b, binary.LittleEndian, pe.SectionHeader32{Name: name, VirtualSize: 16, VirtualAddress: 0x1000, SizeOfRawData: 16,
		PointerToRawData: dataOff, Characteristics: pe.IMAGE_SCN_CNT_CODE | pe.IMAGE_SCN_MEM_EXECUTE | pe.IMAGE_SCN_MEM_READ})
	b.Write(bytes.Repeat([]byte{0xc3}, 16))
	return b.Bytes()
}

func minimalMachO(cpu macho.Cpu, typ macho.Type) []byte {
	var b bytes.Buffer
	const size = 32 + 72 + 16
	binary.Write(&b, binary.LittleEndian, macho.FileHeader{Magic: macho.Magic64, Cpu: cpu, SubCpu: 3, Type: typ, Ncmd: 1, Cmdsz: 72, Flags: macho.FlagPIE})
	b.Write(make([]byte, 4)) // reserved (64-bit header)
	var name [16]byte
	copy(name[:], "__TEXT")
	binary.Write(&b, binary.LittleEndian, macho.Segment64{Cmd: macho.LoadCmdSegment64, Len: 72, Name: name, Addr: 0x100000000,
		Memsz: 0x1000, Offset: 0, Filesz: size, Maxprot: 5, Prot: 5})
	b.Write(bytes.Repeat([]byte{0xc3}, 16))
	return b.Bytes()
}

// minimalFat is a universal Mach-O holding the given slices.
func minimalFat(slices ...[]byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, [2]uint32{macho.MagicFat, uint32(len(slices))})
	off := uint32(8 + 20*len(slices))
	for _, s := range slices {
		cpu := macho.Cpu(binary.LittleEndian.Uint32(s[4:]))
		binary.Write(&b, binary.BigEndian, macho.FatArchHeader{Cpu: cpu, SubCpu: 3, Offset: off, Size: uint32(len(s)), Align: 0})
		off += uint32(len(s))
	}
	for _, s := range slices {
		b.Write(s)
	}
	return b.Bytes()
}

func formatSeeds() [][]byte {
	elf64 := minimalELF(true, binary.LittleEndian, elf.EM_X86_64, elf.ELFOSABI_NONE, elf.ET_EXEC)
	pe64 := minimalPE(pe.IMAGE_FILE_MACHINE_AMD64, pe.IMAGE_FILE_EXECUTABLE_IMAGE|pe.IMAGE_FILE_LARGE_ADDRESS_AWARE)
	mo := minimalMachO(macho.CpuArm64, macho.TypeExec)
	sections := minimalELFSections()
	return [][]byte{
		elf64,
		sections,
		sections[:len(sections)-10], // section headers cut
		elf64[:100],                 // program header cut
		elf64[:len(elf64)-1],        // loaded segment cut
		minimalELF(false, binary.LittleEndian, elf.EM_386, elf.ELFOSABI_FREEBSD, elf.ET_EXEC),
		minimalELF(true, binary.BigEndian, elf.EM_PPC64, elf.ELFOSABI_NONE, elf.ET_EXEC),
		minimalELF(true, binary.LittleEndian, elf.EM_AARCH64, elf.ELFOSABI_NONE, elf.ET_DYN),
		minimalELF(true, binary.LittleEndian, elf.EM_X86_64, elf.ELFOSABI_NONE, elf.ET_REL),
		minimalELF(false, binary.BigEndian, elf.EM_MIPS, elf.ELFOSABI_LINUX, elf.ET_EXEC),
		pe64,
		pe64[:len(pe64)-8],
		minimalPE(pe.IMAGE_FILE_MACHINE_ARM64, pe.IMAGE_FILE_EXECUTABLE_IMAGE|pe.IMAGE_FILE_DLL),
		mo,
		mo[:60],
		minimalMachO(macho.CpuAmd64, macho.TypeDylib),
		minimalFat(minimalMachO(macho.CpuAmd64, macho.TypeExec), mo),
		minimalFat(minimalMachO(macho.CpuAmd64, macho.TypeExec)),
		[]byte("#!/bin/sh\nexec /srv/app \"$@\"\n"),
		[]byte("\x7fELF"),
		[]byte("MZ"),
		{0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 0x7f},
		{},
	}
}

// FuzzInspect: the format checks on arbitrary bytes never panic, read
// nothing outside the file when they accept it, and allocate a bounded
// amount of memory.
func FuzzInspect(f *testing.F) {
	seeds := formatSeeds()
	fuzzseed.Add(f, fuzzseed.Bytes(seeds...)...)
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocated := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	f.Fuzz(func(t *testing.T, b []byte) {
		before := allocated()
		for _, c := range []struct {
			kind, goos, goarch string
		}{
			{"elf", "linux", "amd64"}, {"elf", "freebsd", "386"}, {"elf", "linux", "ppc64"},
			{"pe", "windows", "amd64"}, {"macho", "darwin", "arm64"}, {"macho", "darwin", "amd64"},
		} {
			r := &watchedReader{Reader: bytes.NewReader(b), size: int64(len(b))}
			var desc string
			var err error
			switch c.kind {
			case "elf":
				desc, err = inspectELF(r, r.size, c.goos, c.goarch)
			case "pe":
				desc, err = inspectPE(r, r.size, c.goarch)
			case "macho":
				desc, err = inspectMachO(r, r.size, c.goarch)
			}
			if err == nil && desc == "" {
				t.Fatalf("%s %s/%s: accepted without a description", c.kind, c.goos, c.goarch)
			}
			if err == nil && r.outside != "" {
				t.Fatalf("%s %s/%s: accepted (%s) a file of %d bytes after reading %s", c.kind, c.goos, c.goarch, desc, len(b), r.outside)
			}
		}
		// Six parses of a file of a few KiB: far less than this.
		if n := allocated() - before; n > 64<<20+64*uint64(len(b)) {
			t.Fatalf("%d bytes allocated to inspect a file of %d bytes", n, len(b))
		}
	})
}

// watchedReader notes the first read that reaches outside the file.
type watchedReader struct {
	*bytes.Reader
	size    int64
	outside string
}

func (r *watchedReader) ReadAt(p []byte, off int64) (int, error) {
	if (off < 0 || off+int64(len(p)) > r.size) && r.outside == "" {
		r.outside = fmt.Sprintf("%d bytes at %d", len(p), off)
	}
	return r.Reader.ReadAt(p, off)
}

// The seeds' verdicts: the minimal executables pass where they should.
func TestMinimalExecutables(t *testing.T) {
	s := formatSeeds()
	check := func(name string, err error, ok bool) {
		t.Helper()
		if (err == nil) != ok {
			t.Errorf("%s: err = %v, want ok=%v", name, err, ok)
		}
	}
	_, err := inspectELF(bytes.NewReader(s[0]), int64(len(s[0])), "linux", "amd64")
	check("elf64", err, true)
	_, err = inspectELF(bytes.NewReader(s[1]), int64(len(s[1])), "linux", "amd64")
	check("elf64 with sections", err, true)
	_, err = inspectELF(bytes.NewReader(s[2]), int64(len(s[2])), "linux", "amd64")
	check("elf64 with sections cut", err, false)
	_, err = inspectELF(bytes.NewReader(s[4]), int64(len(s[4])), "linux", "amd64")
	check("elf64 cut", err, false)
	_, err = inspectELF(bytes.NewReader(s[5]), int64(len(s[5])), "freebsd", "386")
	check("elf32 freebsd", err, true)
	_, err = inspectELF(bytes.NewReader(s[6]), int64(len(s[6])), "linux", "ppc64")
	check("elf64 ppc64", err, true)
	_, err = inspectPE(bytes.NewReader(s[10]), int64(len(s[10])), "amd64")
	check("pe", err, true)
	_, err = inspectPE(bytes.NewReader(s[11]), int64(len(s[11])), "amd64")
	check("pe cut", err, false)
	_, err = inspectMachO(bytes.NewReader(s[13]), int64(len(s[13])), "arm64")
	check("macho", err, true)
	_, err = inspectMachO(bytes.NewReader(s[16]), int64(len(s[16])), "amd64")
	check("fat", err, true)
	_, err = inspectMachO(bytes.NewReader(s[16]), int64(len(s[16])), "arm64")
	check("fat arm64", err, true)
}
