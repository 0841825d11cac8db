"""Minimal Linux spidev access through ioctl, so the daemon needs no compiled SPI extension.

It does what the MCP3008 needs and nothing more: SPI mode 0, 8-bit words, full-duplex transfers, and several
chip-select frames in a single ioctl. The MCP3008 only starts a new conversion after chip select goes high and low
again (DS21295: with CS held low it shifts out the result LSB first and then zeros). A burst of samples therefore
needs one chip-select frame per sample. Putting all of those frames into one SPI_IOC_MESSAGE(n) keeps the burst to
a single call into the kernel, instead of one Python round trip per sample.

The struct layout and request numbers follow include/uapi/linux/spi/spidev.h and the generic ioctl encoding of
asm-generic/ioctl.h, which the Raspberry Pi's ARM and ARM64 kernels use.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
from collections.abc import Sequence
from types import TracebackType

# asm-generic/ioctl.h: dir(2) | size(14) | type(8) | nr(8), from the top bit down.
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = 8
_IOC_SIZESHIFT = 16
_IOC_DIRSHIFT = 30
_IOC_SIZEBITS = 14
_IOC_WRITE = 1

SPI_IOC_MAGIC = ord("k")


def _ioc(direction: int, nr: int, size: int) -> int:
    return direction << _IOC_DIRSHIFT | size << _IOC_SIZESHIFT | SPI_IOC_MAGIC << _IOC_TYPESHIFT | nr << _IOC_NRSHIFT


class SpiIocTransfer(ctypes.Structure):
    """struct spi_ioc_transfer: 32 bytes, the same layout for 32- and 64-bit user space."""

    _fields_ = [
        ("tx_buf", ctypes.c_uint64),
        ("rx_buf", ctypes.c_uint64),
        ("len", ctypes.c_uint32),
        ("speed_hz", ctypes.c_uint32),
        ("delay_usecs", ctypes.c_uint16),
        ("bits_per_word", ctypes.c_uint8),
        ("cs_change", ctypes.c_uint8),
        ("tx_nbits", ctypes.c_uint8),
        ("rx_nbits", ctypes.c_uint8),
        ("word_delay_usecs", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


_TRANSFER_SIZE = ctypes.sizeof(SpiIocTransfer)
# The header's SPI_MSGSIZE(N) yields 0 (an invalid request) once N transfers no longer fit the 14-bit size field.
MAX_FRAMES = ((1 << _IOC_SIZEBITS) - 1) // _TRANSFER_SIZE

SPI_IOC_WR_MODE = _ioc(_IOC_WRITE, 1, 1)
SPI_IOC_WR_BITS_PER_WORD = _ioc(_IOC_WRITE, 3, 1)
SPI_IOC_WR_MAX_SPEED_HZ = _ioc(_IOC_WRITE, 4, 4)


def spi_ioc_message(n: int) -> int:
    """SPI_IOC_MESSAGE(n): the request number for an array of n spi_ioc_transfer."""
    if not 1 <= n <= MAX_FRAMES:
        raise ValueError(f"an SPI message holds 1..{MAX_FRAMES} transfers, not {n}")
    return _ioc(_IOC_WRITE, 0, n * _TRANSFER_SIZE)


class LinuxSpi:
    """One /dev/spidevB.D device in SPI mode 0, 8 bits per word."""

    def __init__(self, bus: int, device: int, speed_hz: int = 1_000_000, *, dev_dir: str = "/dev") -> None:
        self.path = os.path.join(dev_dir, f"spidev{bus}.{device}")
        self.speed_hz = speed_hz
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as e:
            raise OSError(e.errno, f"cannot open {self.path}: {e.strerror} (is SPI enabled? dtparam=spi=on)") from e
        self._fd: int | None = fd
        try:
            fcntl.ioctl(fd, SPI_IOC_WR_MODE, struct.pack("=B", 0))
            fcntl.ioctl(fd, SPI_IOC_WR_BITS_PER_WORD, struct.pack("=B", 8))
            fcntl.ioctl(fd, SPI_IOC_WR_MAX_SPEED_HZ, struct.pack("=I", speed_hz))
        except OSError as e:
            self.close()
            raise OSError(e.errno, f"cannot configure {self.path}: {e.strerror}") from e

    def xfer2(self, data: Sequence[int]) -> list[int]:
        """One full-duplex transfer with chip select held for all of it (like spidev's xfer2)."""
        return self.xfer_frames([data])[0]

    def xfer_frames(self, frames: Sequence[Sequence[int]]) -> list[list[int]]:
        """Several transfers in one ioctl; chip select goes high between frames. Returns the bytes read per frame."""
        if self._fd is None:
            raise OSError(f"{self.path} is closed")
        request = spi_ioc_message(len(frames))
        transfers = (SpiIocTransfer * len(frames))()
        # The kernel reads and writes through these addresses: the buffers must outlive the ioctl.
        tx_bufs: list[ctypes.Array[ctypes.c_uint8]] = []
        rx_bufs: list[ctypes.Array[ctypes.c_uint8]] = []
        for i, frame in enumerate(frames):
            if not frame or any(not 0 <= b <= 0xFF for b in frame):
                raise ValueError(f"SPI frame {i} must be 1 or more bytes in 0..255")
            tx = (ctypes.c_uint8 * len(frame))(*frame)
            rx = (ctypes.c_uint8 * len(frame))()
            tx_bufs.append(tx)
            rx_bufs.append(rx)
            t = transfers[i]
            t.tx_buf = ctypes.addressof(tx)
            t.rx_buf = ctypes.addressof(rx)
            t.len = len(frame)
            t.speed_hz = self.speed_hz
            t.bits_per_word = 8
            # cs_change on the last transfer would leave the chip selected after the message.
            t.cs_change = 1 if i < len(frames) - 1 else 0
        fcntl.ioctl(self._fd, request, transfers)
        return [list(rx) for rx in rx_bufs]

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> LinuxSpi:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
