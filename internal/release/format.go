package release

import (
	"bytes"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// checkFormat refuses anything but a complete executable for goos/goarch.
// debug/elf, debug/pe and debug/macho parse the headers; they do not tell
// whether the file was cut short after them (a partial download or copy),
// so every header table, loaded segment and section is also checked to lie
// within the file.
func checkFormat(r *Report, path, goos, goarch string) bool {
	desc, err := inspect(path, goos, goarch)
	if err != nil {
		r.add("format", StatusFailed, fmt.Errorf("%w: %s: %v", ErrNotExecutable, path, err), "")
		return false
	}
	r.Format = desc
	r.add("format", StatusOK, nil, "%s, runs on %s/%s", desc, goos, goarch)
	return true
}

func inspect(path, goos, goarch string) (string, error) {
	f, size, closeFile, err := openForParsing(path)
	if err != nil {
		return "", err
	}
	defer closeFile()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return "", fmt.Errorf("too short to be an executable (%d bytes)", size)
	}
	kind := ""
	switch {
	case bytes.Equal(magic[:], []byte(elf.ELFMAG)):
		kind = "elf"
	case magic[0] == 'M' && magic[1] == 'Z':
		kind = "pe"
	case isMachO(magic):
		kind = "macho"
	case magic[0] == '#' && magic[1] == '!':
		return "", fmt.Errorf("a script (#!), not a native executable")
	default:
		return "", fmt.Errorf("unknown file format (starts with % x)", magic)
	}
	want := "elf"
	switch goos {
	case "windows":
		want = "pe"
	case "darwin", "ios":
		want = "macho"
	}
	var desc string
	switch kind {
	case "elf":
		desc, err = inspectELF(f, size, goos, goarch)
	case "pe":
		desc, err = inspectPE(f, size, goarch)
	case "macho":
		desc, err = inspectMachO(f, size, goarch)
	}
	if kind != want && desc != "" {
		return "", fmt.Errorf("%s executable, for another system than %s/%s", desc, goos, goarch)
	}
	return desc, err
}

func isMachO(m [4]byte) bool {
	le := uint32(m[0]) | uint32(m[1])<<8 | uint32(m[2])<<16 | uint32(m[3])<<24
	be := uint32(m[3]) | uint32(m[2])<<8 | uint32(m[1])<<16 | uint32(m[0])<<24
	for _, v := range []uint32{macho.Magic32, macho.Magic64, macho.MagicFat} {
		if le == v || be == v {
			return true
		}
	}
	return false
}

// within reports whether [off, off+n) lies inside a file of size bytes.
func within(off, n uint64, size int64) bool {
	return off <= uint64(size) && n <= uint64(size)-off
}

var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "386": elf.EM_386, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM,
	"riscv64": elf.EM_RISCV, "ppc64": elf.EM_PPC64, "ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390,
	"loong64": elf.EM_LOONGARCH, "mips": elf.EM_MIPS, "mipsle": elf.EM_MIPS, "mips64": elf.EM_MIPS, "mips64le": elf.EM_MIPS,
}

var elfOSABI = map[string]elf.OSABI{
	"linux": elf.ELFOSABI_LINUX, "freebsd": elf.ELFOSABI_FREEBSD, "netbsd": elf.ELFOSABI_NETBSD,
	"openbsd": elf.ELFOSABI_OPENBSD, "solaris": elf.ELFOSABI_SOLARIS,
}

func inspectELF(r io.ReaderAt, size int64, goos, goarch string) (string, error) {
	// The header tables first, from the raw header: debug/elf fails with a
	// bare EOF when they lie beyond the end (an ELF file cut short loses
	// its section headers first: the Go linker writes them last).
	var ident [elf.EI_NIDENT]byte
	if _, err := r.ReadAt(ident[:], 0); err != nil {
		return "", fmt.Errorf("truncated ELF file: %d bytes", size)
	}
	var order binary.ByteOrder = binary.LittleEndian
	if elf.Data(ident[elf.EI_DATA]) == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	var phoff, shoff, phsize, shsize, phentsize, shentsize uint64
	wide := elf.Class(ident[elf.EI_CLASS]) == elf.ELFCLASS64
	if wide {
		var b [64]byte
		if _, err := r.ReadAt(b[:], 0); err != nil {
			return "", fmt.Errorf("truncated ELF file: %d bytes", size)
		}
		phoff, shoff = order.Uint64(b[32:]), order.Uint64(b[40:])
		phentsize = uint64(order.Uint16(b[54:]))
		phsize = phentsize * uint64(order.Uint16(b[56:]))
		shentsize = uint64(order.Uint16(b[58:]))
		shsize = shentsize * uint64(order.Uint16(b[60:]))
	} else {
		var b [52]byte
		if _, err := r.ReadAt(b[:], 0); err != nil {
			return "", fmt.Errorf("truncated ELF file: %d bytes", size)
		}
		phoff, shoff = uint64(order.Uint32(b[28:])), uint64(order.Uint32(b[32:]))
		phentsize = uint64(order.Uint16(b[42:]))
		phsize = phentsize * uint64(order.Uint16(b[44:]))
		shentsize = uint64(order.Uint16(b[46:]))
		shsize = shentsize * uint64(order.Uint16(b[48:]))
	}
	if !within(phoff, phsize, size) {
		return "", fmt.Errorf("truncated ELF file: its program headers end at %d, the file has %d bytes", phoff+phsize, size)
	}
	if shoff != 0 && !within(shoff, shsize, size) {
		return "", fmt.Errorf("truncated ELF file: its section headers end at %d, the file has %d bytes", shoff+shsize, size)
	}
	// The loaded segments, from the raw program headers (debug/elf reads
	// the section names first and fails with a bare EOF when they are cut).
	for off := phoff; phentsize > 0 && off+phentsize <= phoff+phsize; off += phentsize {
		var ph [56]byte
		n := phentsize
		if n > uint64(len(ph)) {
			n = uint64(len(ph))
		}
		if _, err := r.ReadAt(ph[:n], int64(off)); err != nil {
			return "", fmt.Errorf("truncated ELF file: %v", err)
		}
		var typ, poff, filesz uint64
		if wide {
			typ, poff, filesz = uint64(order.Uint32(ph[0:])), order.Uint64(ph[8:]), order.Uint64(ph[32:])
		} else {
			typ, poff, filesz = uint64(order.Uint32(ph[0:])), uint64(order.Uint32(ph[4:])), uint64(order.Uint32(ph[16:]))
		}
		if elf.ProgType(typ) == elf.PT_LOAD && !within(poff, filesz, size) {
			return "", fmt.Errorf("truncated ELF file: a loaded segment ends at %d, the file has %d bytes", poff+filesz, size)
		}
	}
	// The sections' contents, from the raw section headers (the section
	// names live in one of them: debug/elf cannot even name them when the
	// file is cut).
	for i, off := 0, shoff; shoff != 0 && shentsize >= 24 && off+shentsize <= shoff+shsize; i, off = i+1, off+shentsize {
		var sh [64]byte
		n := min(shentsize, uint64(len(sh)))
		if _, err := r.ReadAt(sh[:n], int64(off)); err != nil {
			return "", fmt.Errorf("truncated ELF file: %v", err)
		}
		var typ, soff, ssize uint64
		if wide {
			typ, soff, ssize = uint64(order.Uint32(sh[4:])), order.Uint64(sh[24:]), order.Uint64(sh[32:])
		} else {
			typ, soff, ssize = uint64(order.Uint32(sh[4:])), uint64(order.Uint32(sh[16:])), uint64(order.Uint32(sh[20:]))
		}
		if t := elf.SectionType(typ); t != elf.SHT_NOBITS && t != elf.SHT_NULL && !within(soff, ssize, size) {
			return "", fmt.Errorf("truncated ELF file: section %d ends at %d, the file has %d bytes", i, soff+ssize, size)
		}
	}
	f, err := elf.NewFile(r)
	if err != nil {
		return "", fmt.Errorf("corrupt ELF file: %v", err)
	}
	bits := "64-bit"
	if f.Class == elf.ELFCLASS32 {
		bits = "32-bit"
	}
	desc := fmt.Sprintf("ELF %s %s", bits, machineName(f.Machine))
	if f.Type != elf.ET_EXEC && !(f.Type == elf.ET_DYN && f.Entry != 0) {
		return "", fmt.Errorf("%s of type %s, not an executable", desc, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && !within(p.Off, p.Filesz, size) {
			return "", fmt.Errorf("truncated %s: a loaded segment ends at %d, the file has %d bytes", desc, p.Off+p.Filesz, size)
		}
	}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOBITS && s.Type != elf.SHT_NULL && !within(s.Offset, s.FileSize, size) {
			return "", fmt.Errorf("truncated %s: section %s ends at %d, the file has %d bytes", desc, s.Name, s.Offset+s.FileSize, size)
		}
	}
	if len(f.Progs) == 0 {
		return "", fmt.Errorf("%s without program headers: nothing to load", desc)
	}
	if m, ok := elfMachines[goarch]; !ok || m != f.Machine || (f.Class == elf.ELFCLASS64) != is64(goarch) {
		return desc, fmt.Errorf("%s executable, for another CPU than %s", desc, goarch)
	}
	if (f.Machine == elf.EM_PPC64 || f.Machine == elf.EM_MIPS) && (goarch == "ppc64le" || goarch == "mipsle" || goarch == "mips64le") != (f.Data == elf.ELFDATA2LSB) {
		return desc, fmt.Errorf("%s executable with %s byte order, for another CPU than %s", desc, f.Data, goarch)
	}
	// OS: ELFOSABI_NONE is what Linux binaries (Go's included) carry;
	// a binary marked for another OS is refused.
	if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elfOSABI[goos] {
		return desc, fmt.Errorf("%s executable for %s, this system is %s", desc, f.OSABI, goos)
	}
	return desc, nil
}

func is64(goarch string) bool {
	switch goarch {
	case "386", "arm", "mips", "mipsle":
		return false
	}
	return true
}

func machineName(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "x86-64"
	case elf.EM_AARCH64:
		return "arm64"
	case elf.EM_386:
		return "386"
	case elf.EM_ARM:
		return "arm"
	case elf.EM_RISCV:
		return "riscv"
	}
	return m.String()
}

var peMachines = map[string]uint16{
	"amd64": pe.IMAGE_FILE_MACHINE_AMD64, "386": pe.IMAGE_FILE_MACHINE_I386,
	"arm64": pe.IMAGE_FILE_MACHINE_ARM64, "arm": pe.IMAGE_FILE_MACHINE_ARMNT,
}

func inspectPE(r io.ReaderAt, size int64, goarch string) (string, error) {
	f, err := pe.NewFile(r)
	if err != nil {
		return "", fmt.Errorf("corrupt PE file: %v", err)
	}
	desc := fmt.Sprintf("Windows PE (machine %#x)", f.Machine)
	for arch, m := range peMachines {
		if m == f.Machine {
			desc = "Windows PE " + arch
		}
	}
	if f.Characteristics&pe.IMAGE_FILE_EXECUTABLE_IMAGE == 0 || f.Characteristics&pe.IMAGE_FILE_DLL != 0 {
		return "", fmt.Errorf("%s that is not an executable image (a DLL or an object file)", desc)
	}
	for _, s := range f.Sections {
		if s.Size > 0 && !within(uint64(s.Offset), uint64(s.Size), size) {
			return "", fmt.Errorf("truncated %s: section %s ends at %d, the file has %d bytes", desc, s.Name, uint64(s.Offset)+uint64(s.Size), size)
		}
	}
	if peMachines[goarch] != f.Machine {
		return desc, fmt.Errorf("%s executable, for another CPU than %s", desc, goarch)
	}
	return desc, nil
}

var machoCPUs = map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64, "386": macho.Cpu386}

func inspectMachO(r io.ReaderAt, size int64, goarch string) (string, error) {
	if ff, err := macho.NewFatFile(r); err == nil {
		defer ff.Close()
		for _, a := range ff.Arches {
			if a.Cpu == machoCPUs[goarch] {
				if !within(uint64(a.Offset), uint64(a.Size), size) {
					return "", fmt.Errorf("truncated universal Mach-O: the %s slice ends beyond the file", goarch)
				}
				return checkMachO(a.File, int64(a.Size), goarch)
			}
		}
		return "universal Mach-O", fmt.Errorf("universal Mach-O without a %s slice", goarch)
	}
	f, err := macho.NewFile(r)
	if err != nil {
		return "", fmt.Errorf("corrupt Mach-O file: %v", err)
	}
	return checkMachO(f, size, goarch)
}

func checkMachO(f *macho.File, size int64, goarch string) (string, error) {
	desc := fmt.Sprintf("Mach-O %s", f.Cpu)
	if f.Type != macho.TypeExec {
		return "", fmt.Errorf("%s of type %s, not an executable", desc, f.Type)
	}
	for _, l := range f.Loads {
		if s, ok := l.(*macho.Segment); ok && !within(s.Offset, s.Filesz, size) {
			return "", fmt.Errorf("truncated %s: segment %s ends at %d, the file has %d bytes", desc, s.Name, s.Offset+s.Filesz, size)
		}
	}
	if machoCPUs[goarch] != f.Cpu {
		return desc, fmt.Errorf("%s executable, for another CPU than %s", desc, goarch)
	}
	return desc, nil
}

// inMemoryLimit bounds the files read whole for parsing.
const inMemoryLimit = 512 << 20

// openForParsing gives the debug/* parsers the file: read whole into
// memory when it is of a binary's size (the parsers make many small reads,
// each a system call, slow under Wine), else the file itself.
func openForParsing(path string) (r interface {
	io.Reader
	io.ReaderAt
}, size int64, closeFile func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, err
	}
	if fi.Size() > inMemoryLimit {
		return f, fi.Size(), func() { f.Close() }, nil
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, 0, nil, err
	}
	return bytes.NewReader(b), int64(len(b)), func() {}, nil
}
